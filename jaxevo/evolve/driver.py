"""The round driver: runs (or resumes) `run.rounds` rounds of the configured stages.

    result = run_evolve(cfg, raw_config)

Round 0 is the start model's evaluation (preceded, with `meta.enabled`, by SELF's meta-skill
training, whose model then replaces the start model). Each round r >= 1 starts from round r-1's model, runs the
stages of `stages.ORDER`, and records its model in the manifest; a rerun skips every stage the
manifest marks done (and a training stage resumes from its own Orbax checkpoints).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from jaxevo import distributed
from jaxevo.evolve.config import EvolveConfig
from jaxevo.evolve.rundir import RunDir, read_jsonl, write_jsonl
from jaxevo.evolve.stages import ORDER, STAGES, write_json

log = logging.getLogger(__name__)
EVAL_INDEX = ORDER.index("eval") + 1
META_INDEX = 0  # round 0's meta-skill stage (SELF) runs before the start model's evaluation


class Ctx:
    """What a stage may ask about its run and round. Models are named by path (checkpoint dirs)."""

    def __init__(self, cfg: EvolveConfig, run: RunDir, round_: int, mesh, stop_at: int | None = None):
        self.cfg, self.run, self.round, self.mesh, self.stop_at = cfg, run, round_, mesh, stop_at
        self.seed = cfg.run.seed * 1000 + round_
        # The model rounds start (and SELF restarts) from: the meta-skill model once it exists.
        self.base_path = cfg.model.path
        meta = run.stage_info(0, "meta")
        if cfg.meta.enabled and meta.get("model"):
            self.base_path = str(run.stage_dir(0, META_INDEX, "meta") / meta["model"])
        self._samplers: dict[str, Any] = {}
        self._pool: list[dict] | None = None
        self._stage_dir: Path | None = None  # the running stage's .partial folder (sampling journals)
        self._journals = 0
        self.progress = cfg.run.progress and distributed.is_main()  # bars on process 0 only

    # -------------------------------------------------------------- files of earlier stages
    def output(self, name: str, round_: int | None = None) -> Path:
        r = self.round if round_ is None else round_
        return self.run.stage_dir(r, ORDER.index(name) + 1, name)

    def previous_groups(self, name: str) -> Path:
        """groups.jsonl of the closest earlier stage that writes groups."""
        for prev in reversed(ORDER[: ORDER.index(name)]):
            p = self.output(prev) / "groups.jsonl"
            if p.exists():
                return p
        raise FileNotFoundError(f"no groups.jsonl before stage {name}")

    def prompt_pool(self) -> list[dict]:
        if self._pool is None:
            from jaxevo.data import load_source

            self._pool = [dict(r) for r in load_source(self.cfg.prompts.source)]
        return self._pool

    def begin(self, stage_dir: Path) -> "Ctx":
        """Called before each stage: its samplers journal their chunks into `stage_dir`."""
        self._stage_dir, self._journals = stage_dir, 0
        return self

    def _next_journal(self) -> Path | None:
        if self._stage_dir is None or not self.cfg.sample.journal_rows:
            return None
        self._journals += 1
        return self._stage_dir / f"samples_{self._journals:02d}.jsonl"

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
        """The newest model of this round: after preference, else after SFT, else the start model;
        the start model again when the round gate rejected the round (`rounds.gate`)."""
        if self.run.stage_info(self.round, "gate").get("accepted") is False:
            return self.start_model()
        for name in ("preference", "sft"):
            info = self.run.stage_info(self.round, name)
            if info.get("model"):
                return str(self.output(name) / info["model"])
        return self.start_model()

    def sampler(self, model: str | None = None):
        """The (cached) sampler of `model` (default: the round's start model), journaling each
        generate() call into the running stage's folder (see `journal`)."""
        from jaxevo.evolve.journal import JournaledSampler
        from jaxevo.sampling.api import Sampler

        model = model or self.start_model()
        if model not in self._samplers:
            s = Sampler.load(model, dtype=self.cfg.model.sample_dtype, max_batch=self.cfg.sample.batch_size,
                             mesh=self._sampler_mesh(), continuous=self.cfg.sample.continuous)
            self._samplers = {model: JournaledSampler(s, model, self._next_journal, self.cfg.sample.journal_rows)}
        return self._samplers[model]

    def _sampler_mesh(self):
        """The run's mesh when it spans several processes (every host must take part in the
        sampler's programs); on one process None, the sampler's fast single-device path."""
        return self.mesh if distributed.process_count() > 1 else None

    def release_samplers(self) -> None:
        """Drop the cached samplers (their prepared weights and KV cache buffers: ~3 GB for the
        135M model at 64 rows on CPU) before a training phase needs the memory."""
        import gc

        self._samplers = {}
        gc.collect()

    def judge_sampler(self):
        if not self.cfg.score.judge_model:
            from jaxevo.errors import ConfigError

            raise ConfigError("score.scorer=judge needs score.judge_model")
        return self.sampler(self.cfg.score.judge_model)

    def sampling(self, max_new_tokens: int, temperature: float, n: int = 1, salt: int = 0):
        from jaxevo.sampling.api import SamplingParams

        c = self.cfg.sample
        return SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, n=n,
                              top_p=c.top_p, top_k=c.top_k, min_p=c.min_p,
                              seed=self.seed * 7919 + salt)

    def sampler_stats(self) -> dict[str, Any]:
        st = next(iter(self._samplers.values())).last_stats
        return {"new_tokens": st.new_tokens, "tokens_per_s": round(st.tokens_per_second, 1)}

    def evaluate(self, model: str, out: Path, source: dict[str, Any] | None = None) -> dict[str, Any]:
        """Evaluate `model` on the held-out `eval.source` (or on `source`, greedy only: the round
        gate's validation items); writes results.jsonl and eval.json into `out`."""
        from jaxevo.data import load_source
        from jaxevo.evaluate import evaluate

        e = self.cfg.eval
        out.mkdir(parents=True, exist_ok=True)
        items = [dict(r) for r in load_source(source or e.source)]
        s = self.sampler(model)
        rows, summary = evaluate(s, items, max_new_tokens=e.max_new_tokens, chat=self.cfg.prompts.chat,
                                 self_refine=e.self_refine and source is None,
                                 refine_template=self.cfg.refine.template, progress=self.progress)
        write_jsonl(out / "results.jsonl", rows)
        write_json(out / "eval.json", summary)
        return summary


def run_evolve(cfg: EvolveConfig, raw: dict[str, Any], *, stop_after: tuple[int, str] | None = None,
               stop_at_step: int | None = None, mesh=None) -> dict[str, Any]:
    """Run or resume. `stop_after=(round, stage)` / `stop_at_step` end the run early as if it were
    killed there (used by the resume tests). Returns the manifest.

    Multi-host: call on every process with the same config; all of them run every stage, process 0
    writes the files (see `rundir`)."""
    from jaxevo.config import to_dict
    from jaxevo.evolve.report import print_round, write_report
    from jaxevo.sharding import make_mesh

    run = RunDir(cfg.run.dir, raw, defaults=to_dict(EvolveConfig())).open()
    mesh = mesh if mesh is not None else make_mesh(cfg.model.mesh)
    if cfg.meta.enabled and not run.is_done(0, "meta"):
        tmp = run.begin_stage(0, META_INDEX, "meta")
        t0 = time.time()
        info = STAGES["meta"](Ctx(cfg, run, 0, mesh, stop_at=stop_at_step).begin(tmp), tmp)
        run.finish_stage(0, META_INDEX, "meta", dict(info, seconds=round(time.time() - t0, 2)))
        log.info("round 0 meta: %s", {k: v for k, v in info.items() if k != "final"})
        if stop_after == (0, "meta"):
            return run.manifest()
    if cfg.eval.before and not run.is_done(0, "eval"):
        tmp = run.begin_stage(0, EVAL_INDEX, "eval")
        ctx = Ctx(cfg, run, 0, mesh).begin(tmp)
        t0 = time.time()
        info = {"model": cfg.model.path, **ctx.evaluate(cfg.model.path, tmp)}
        run.finish_stage(0, EVAL_INDEX, "eval", dict(info, seconds=round(time.time() - t0, 2)))
        distributed.main_only(print_round)(run, 0)
        distributed.main_only(_log_round)(run, 0)
    for r in range(1, cfg.run.rounds + 1):
        if run.manifest()["rounds"].get(str(r), {}).get("done"):
            continue
        ctx = Ctx(cfg, run, r, mesh, stop_at=stop_at_step)
        for i, name in enumerate(ORDER, 1):
            if run.is_done(r, name):
                continue
            tmp = run.begin_stage(r, i, name)
            t0 = time.time()
            info = STAGES[name](ctx.begin(tmp), tmp)
            info["seconds"] = round(time.time() - t0, 2)
            run.finish_stage(r, i, name, info)
            log.info("round %d %s: %s", r, name, {k: v for k, v in info.items() if k != "topic_stats"})
            if stop_after == (r, name):
                return run.manifest()
        run.set_round_info(r, model=_relative(run, ctx.latest_model()), done=True)
        distributed.main_only(print_round)(run, r)
        distributed.main_only(_log_round)(run, r)
    final = run.root / "final_model"
    last = Ctx(cfg, run, cfg.run.rounds, mesh).latest_model()
    source = _relative(run, last)
    # Exported again when the last round's model changed (run.rounds raised on a resume).
    export = not final.exists() or run.manifest().get("final_model_from") != source
    if distributed.is_main():
        if export:
            from jaxevo.weights.load import hf_dir_for

            tmp = final.with_name("final_model.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(hf_dir_for(last), tmp)
            shutil.rmtree(final, ignore_errors=True)
            tmp.replace(final)
    run.set_info(final_model_from=source)
    if distributed.is_main():
        write_report(run, cfg)
    distributed.barrier("jaxevo_run_done")
    return run.manifest()


def _relative(run: RunDir, model: str) -> str:
    """A model path relative to the run directory when inside it (the manifest's form)."""
    return str(Path(model).relative_to(run.root)) if Path(model).is_relative_to(run.root) else model


def _log_round(run: RunDir, r: int) -> None:
    """Round metrics to RUN/metrics.jsonl and RUN/tensorboard (step = round)."""
    from jaxevo.evolve.report import round_metrics
    from jaxevo.train.tblog import MetricsLogger

    logger = MetricsLogger(run.root)
    try:
        logger.log(r, round_metrics(run.manifest(), r))
    finally:
        logger.close()
