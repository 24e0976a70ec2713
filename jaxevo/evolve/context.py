"""`RoundContext`: what a stage may ask about its run and its round.

    ctx.input("groups.jsonl")   the file as the closest earlier stage of the round wrote it
    ctx.sampler(model)          a cached, journaling sampler (default: the round's start model)
    ctx.start_model()           the model the round starts from; ctx.latest_model() its newest
    ctx.scoring                 the configured scorer, set up for the round (`scorers.ScorerSetup`)

Models are named by path (checkpoint directories). The driver makes one context per round and
calls `begin(stage, folder)` before each stage.
"""

from __future__ import annotations

import functools
import gc
from pathlib import Path
from typing import Any, Protocol, Sequence

from jaxevo import distributed
from jaxevo.data import load_source
from jaxevo.evaluate import evaluate
from jaxevo.evolve import judge_scorers  # noqa: F401  (registers the judge and reward-model scorers)
from jaxevo.evolve.config import EvolveConfig
from jaxevo.evolve.journal import JournaledSampler
from jaxevo.evolve.rundir import RunDir, write_json, write_jsonl
from jaxevo.evolve.scorers import SCORERS, Scorer, ScorerSetup
from jaxevo.sampling.api import Sampler, SamplingParams
from jaxevo.strategies import Strategy


class Declared(Protocol):
    """What the context needs to know of a stage: its name and the files it writes."""

    name: str
    writes: tuple[str, ...]


class RoundContext:
    """One round of one run: its config, run directory, stages, mesh, seed and samplers."""

    def __init__(self, cfg: EvolveConfig, run: RunDir, round_: int, mesh, stages: Sequence[Declared] = (),
                 stop_at: int | None = None):
        self.cfg, self.run, self.round, self.mesh, self.stop_at = cfg, run, round_, mesh, stop_at
        self.stages = tuple(stages)  # the recipe's stages of this round, in order
        self.seed = cfg.run.seed * 1000 + round_
        # The model rounds start (and SELF restarts) from: the meta-skill model once it exists.
        self.base_path = cfg.model.path
        meta = run.stage_info(0, "meta")
        if cfg.meta.enabled and meta.get("model"):
            self.base_path = str(run.stage_dir(0, "meta") / meta["model"])
        self.progress = cfg.run.progress and distributed.is_main()  # bars on process 0 only
        self._samplers: dict[str, dict[int, JournaledSampler]] = {}  # model -> rows a call -> sampler
        self._last_sampler: JournaledSampler | None = None
        self._pool: list[dict] | None = None
        self._stage: str | None = None  # the running stage
        self._stage_dir: Path | None = None  # its .partial folder (sampling journals)
        self._journals = 0

    def begin(self, stage: str, stage_dir: Path) -> "RoundContext":
        """Called before each stage: its samplers journal their chunks into `stage_dir`."""
        self._stage, self._stage_dir, self._journals = stage, stage_dir, 0
        return self

    # -------------------------------------------------------------- files of earlier stages
    def output(self, name: str, round_: int | None = None) -> Path:
        """The folder of stage `name` (of this round, or of `round_`)."""
        return self.run.stage_dir(self.round if round_ is None else round_, name)

    def input(self, file: str) -> Path:
        """`file` as written by the closest stage before the running one that declares it."""
        names = [s.name for s in self.stages]
        before = self.stages[: names.index(self._stage)] if self._stage in names else self.stages
        for s in reversed(before):
            if file in s.writes:
                return self.output(s.name) / file
        raise FileNotFoundError(f"no stage before {self._stage} writes {file}")

    def prompt_pool(self) -> list[dict]:
        """The records of `prompts.source` (loaded once)."""
        if self._pool is None:
            self._pool = [dict(r) for r in load_source(self.cfg.prompts.source)]
        return self._pool

    @functools.cached_property
    def scoring(self) -> ScorerSetup:
        """`score.scorer`, set up for this round (its params, its feedback writer...)."""
        return self.scorer.prepare(self)

    @property
    def scorer(self) -> Scorer:
        return SCORERS.get(self.cfg.score.scorer, "score.scorer")

    # -------------------------------------------------------------- models
    def start_model(self) -> str:
        """The model this round starts from: the previous round's, or the base model."""
        if self.round <= 1:
            return self.base_path
        prev = self.run.manifest()["rounds"].get(str(self.round - 1), {}).get("model")
        if not prev:
            raise RuntimeError(f"round {self.round - 1} has no model in the manifest")
        return self._abs(prev)

    def _abs(self, p: str) -> str:
        return str(self.run.root / p) if not Path(p).is_absolute() and (self.run.root / p).exists() else p

    def latest_model(self) -> str:
        """The newest model of this round: that of the last stage that wrote one ("model" in its
        `writes`), else the start model; the start model again when the round gate rejected the
        round (`rounds.gate`)."""
        if self.run.stage_info(self.round, "gate").get("accepted") is False:
            return self.start_model()
        for s in reversed(self.stages):
            info = self.run.stage_info(self.round, s.name)
            if "model" in s.writes and info.get("model"):
                return str(self.output(s.name) / info["model"])
        return self.start_model()

    def sampler(self, model: str | None = None, max_batch: int | None = None) -> JournaledSampler:
        """The (cached) sampler of `model` (default: the round's start model) decoding up to
        `max_batch` rows a call (default `sample.batch_size`), journaling each generate() call into
        the running stage's folder (see `journal`). One model's samplers share its weights."""
        model = model or self.start_model()
        rows = max_batch or self.cfg.sample.batch_size
        if model not in self._samplers:
            s = Sampler.load(model, dtype=self.cfg.model.sample_dtype, max_batch=self.cfg.sample.batch_size,
                             mesh=self._sampler_mesh(), continuous=self.cfg.sample.continuous)
            self._samplers = {model: {s.max_batch: self._journaled(s, model)}}
        by_rows = self._samplers[model]
        if rows not in by_rows:
            by_rows[rows] = self._journaled(next(iter(by_rows.values())).with_max_batch(rows), model)
        self._last_sampler = by_rows[rows]
        return by_rows[rows]

    def _journaled(self, sampler: Sampler, model: str) -> JournaledSampler:
        return JournaledSampler(sampler, model, self._next_journal, self.cfg.sample.journal_rows)

    def _next_journal(self) -> Path | None:
        if self._stage_dir is None or not self.cfg.sample.journal_rows:
            return None
        self._journals += 1
        return self._stage_dir / f"samples_{self._journals:02d}.jsonl"

    def _sampler_mesh(self):
        """The run's mesh when it spans several processes (every host must take part in the
        sampler's programs); on one process None, the sampler's fast single-device path."""
        return self.mesh if distributed.process_count() > 1 else None

    def release_samplers(self) -> None:
        """Drop the cached samplers (their prepared weights and KV cache buffers) before a
        training phase needs the memory."""
        self._samplers, self._last_sampler = {}, None
        gc.collect()

    def sampling(self, max_new_tokens: int, temperature: float, n: int = 1, salt: int = 0,
                 answers: bool = False) -> SamplingParams:
        """Sampling parameters of the run (top-p/k, min-p) on the round's seed (+ `salt`);
        `answers`: the texts are answers, so `sample.stop_after` ends them (not feedback)."""
        c = self.cfg.sample
        return SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, n=n,
                              top_p=c.top_p, top_k=c.top_k, min_p=c.min_p,
                              seed=self.seed * 7919 + salt, stop_after=c.stop_after if answers else ())

    def sampler_stats(self) -> dict[str, Any]:
        st = self._last_sampler.last_stats
        return {"new_tokens": st.new_tokens, "tokens_per_s": round(st.tokens_per_second, 1)}

    def evaluate(self, model: str, out: Path, source: dict[str, Any] | None = None) -> dict[str, Any]:
        """Evaluate `model` on the held-out `eval.source` (or on `source`, greedy only: the round
        gate's validation items, `eval.unseen_source`); writes results.jsonl and eval.json into `out`."""
        e = self.cfg.eval
        out.mkdir(parents=True, exist_ok=True)
        items = [dict(r) for r in load_source(source or e.source)]
        rows, summary = evaluate(self.sampler(model, e.batch_size), items, max_new_tokens=e.max_new_tokens,
                                 chat=self.cfg.prompts.chat, self_refine=e.self_refine and source is None,
                                 stop_after=e.stop_after,
                                 refine_template=self.cfg.refine.template, progress=self.progress,
                                 strategy=None if source is not None or not e.refine_steps else Strategy(
                                     refine_steps=e.refine_steps, self_feedback=e.self_feedback,
                                     refine_template=self.cfg.refine.template,
                                     feedback_template=self.cfg.feedback.template,
                                     feedback_max_new_tokens=self.cfg.feedback.max_new_tokens))
        write_jsonl(out / "results.jsonl", rows)
        write_json(out / "eval.json", summary)
        return summary

    def evaluate_held_out(self, model: str, out: Path) -> dict[str, Any]:
        """`evaluate` on `eval.source` into `out`, and, with `eval.unseen_source`, greedy on it
        into `out/unseen` (its summary under "unseen"). Each evaluation's sampling is journaled
        in turn, so a killed stage resumes without redoing a finished one."""
        summary = self.evaluate(model, out)
        if self.cfg.eval.unseen_source:
            summary["unseen"] = self.evaluate(model, out / "unseen", source=self.cfg.eval.unseen_source)
        return summary
