"""The stages that train: SFT (phase 1), the preference phase (phase 2), the format-only control
arm, and SELF's meta-skill round (round 0). Each trains through `jaxevo.train.loop.train`,
resuming from its own checkpoints, and exports the model its folder keeps (train/final)."""

from __future__ import annotations

import collections
import dataclasses
import re
import shutil
from pathlib import Path
from typing import Any

from jaxevo import distributed
from jaxevo.evolve import critique, select
from jaxevo.evolve.config import REFERENCE_SCORERS
from jaxevo.evolve.context import RoundContext
from jaxevo.evolve.recipe import stage
from jaxevo.evolve.rundir import read_jsonl, write_jsonl
from jaxevo.evolve.scorers import SCORERS
from jaxevo.evolve.stages.sampling import sample_groups
from jaxevo.train.loop import train


class Interrupted(Exception):
    """Raised when a test asks training to stop mid-phase (simulated kill)."""


def train_phase(ctx: RoundContext, out: Path, phase_cfg, records: list[dict], start_model: str,
                reference: str | None = None) -> dict[str, Any]:
    """Train `phase_cfg` on `records` from `start_model` into `out`/train; the info names the
    exported model relative to `out`."""
    if not records:
        return {"skipped": "no training data", "model": None}
    ctx.release_samplers()
    tc = phase_cfg.replace(
        out_dir=str(out / "train"),
        model=dataclasses.replace(phase_cfg.model, path=start_model, reference=reference),
        data=dataclasses.replace(phase_cfg.data, path="", refine_template=ctx.cfg.refine.template,
                                 feedback_template=ctx.cfg.feedback.template),
        seed=ctx.seed,
        # The driver keeps the exported model; the finished train state only when asked to.
        checkpoint=dataclasses.replace(phase_cfg.checkpoint, final=ctx.cfg.run.keep_checkpoints),
        log=dataclasses.replace(phase_cfg.log, progress=ctx.progress))
    if tc.steps is None:  # never fewer than one step, never a batch larger than the data
        tc = tc.replace(batch_size=min(tc.batch_size, _fit_batch(len(records), tc)))
    key = "preference." if phase_cfg is ctx.cfg.preference else "sft."  # for messages
    result = train(tc, records=records, stop_at=ctx.stop_at, mesh=ctx.mesh, key_prefix=key)
    if result.export_dir is None:
        raise Interrupted(f"training stopped at step {result.steps} (stop_at)")
    if not ctx.cfg.run.keep_checkpoints and distributed.is_main():
        # The exported model is what later stages read; the train states saved every
        # `checkpoint.every` steps served only a resume mid-training. A rerun of this stage (killed
        # before its rename) retrains from step 0 and gets the same model (deterministic step).
        shutil.rmtree(out / "train" / "checkpoints", ignore_errors=True)
    hist = result.history
    last = hist[-1] if hist else {}
    # The model's path relative to the stage folder (the folder is renamed when the stage ends).
    return {"model": str(result.export_dir.relative_to(out.absolute())), "steps": result.steps,
            "examples": len(records),
            "final": {k: v for k, v in last.items() if isinstance(v, (int, float))},
            "first_loss": hist[0]["loss"] if hist else None, **result.stats}


def _fit_batch(n: int, tc) -> int:
    mb = tc.micro_batch_size or tc.batch_size
    return max(mb, (n // mb) * mb) if n >= mb else mb


@stage("sft", reads=("sft.jsonl",), writes=("model",))
def sft_stage(ctx: RoundContext, out: Path) -> dict[str, Any]:
    """Phase 1: SFT on the round's examples, from the start model (or the base, SELF's restart)."""
    if ctx.cfg.sft is None:
        return {"skipped": "no sft phase", "model": None}
    if not sft_runs(ctx):
        return {"skipped": f"rounds.sft_rounds={ctx.cfg.rounds.sft_rounds}", "model": None}
    records = read_jsonl(ctx.input("sft.jsonl"))
    start = ctx.base_path if ctx.cfg.rounds.restart_from_base else ctx.start_model()
    phase = meta_phase(ctx.cfg, ctx.cfg.sft.epochs) if restart_views(ctx.cfg) else ctx.cfg.sft
    return train_phase(ctx, out, phase, records, start)


def restart_views(cfg) -> bool:
    """SELF's restart trains every meta-skill view (`meta.restart_views`): the round's SFT data is
    the meta-skill tuples plus the direct answers, trained with the `self_meta` objective."""
    return cfg.rounds.restart_from_base and cfg.meta.enabled and cfg.meta.restart_views


def meta_phase(cfg, epochs: int):
    """The `sft:` phase with the `self_meta` objective (β = `meta.beta`) and the meta views'
    `meta.max_length`: the meta-skill round's training, and SELF's restart with every view."""
    m = cfg.meta
    return cfg.sft.replace(
        epochs=epochs, steps=None, data=dataclasses.replace(cfg.sft.data, max_length=m.max_length),
        objective=dataclasses.replace(cfg.sft.objective, name="self_meta", hparams={"beta": m.beta}))


@stage("preference", reads=("pairs.jsonl",), writes=("model",))
def preference_stage(ctx: RoundContext, out: Path) -> dict[str, Any]:
    """Phase 2: the preference objective on the round's pairs, from the newest model; reference
    log-probs (`rounds.reference`: see `reference_model`) computed once."""
    if ctx.cfg.preference is None:
        return {"skipped": "no preference phase", "model": None}
    records = read_jsonl(ctx.input("pairs.jsonl"))
    start = ctx.latest_model()
    return train_phase(ctx, out, ctx.cfg.preference, records, start, reference=reference_model(ctx, start))


def sft_runs(ctx: RoundContext) -> bool:
    """Does this round run its SFT stage (`rounds.sft_rounds`)? EVOLVE's activation phase runs it
    once, in `rounds.activation_round`."""
    r = ctx.cfg.rounds
    return r.sft_rounds == "every" or (r.sft_rounds == "activation" and ctx.round == r.activation_round)


def reference_model(ctx: RoundContext, start: str) -> str | None:
    """The preference phase's reference (`rounds.reference`), None when it is the model the phase
    starts from (`start`: same weights, and the first step's margin is then exactly zero)."""
    mode = ctx.cfg.rounds.reference
    sft_model = ctx.run.stage_info(ctx.round, "sft").get("model")
    if mode == "sft" or (mode == "previous" and ctx.cfg.rounds.sft_rounds == "activation" and sft_model):
        return None  # the activation SFT's model is the "previous round" of the first preference round
    ref = ctx.start_model()
    return None if ref == start else ref


@stage("control", reads=("control.jsonl",), writes=("eval.json",))
def control_stage(ctx: RoundContext, out: Path) -> dict[str, Any]:
    """The format-only control arm: SFT on as many well-formatted self-samples, no scorer; evaluated."""
    if not ctx.cfg.select.control or ctx.cfg.sft is None:
        return {"skipped": "control off"}
    records = read_jsonl(ctx.input("control.jsonl"))
    info = train_phase(ctx, out, ctx.cfg.sft, records, ctx.start_model())
    if info.get("model"):
        info["eval"] = ctx.evaluate_held_out(str(out / info["model"]), out)
    return info


@stage("meta", writes=("scored.jsonl", "meta.jsonl", "qa.jsonl"))
def meta_stage(ctx: RoundContext, out: Path) -> dict[str, Any]:
    """SELF's round 0 (see `config.MetaSection`): sample the last `meta.prompts` prompts of the
    source, score them, build (question, answer, feedback, refined) tuples and train the
    meta-skill objective from the start model. Writes meta.jsonl (every view of each tuple, in
    every restart's data with `meta.restart_views`), qa.jsonl (the direct-answer view, mixed into
    later rounds' SFT data without it), the model, and its evaluation."""
    m = ctx.cfg.meta
    pool = ctx.prompt_pool()
    items = pool[-min(m.prompts, len(pool)):]
    groups = sample_groups(ctx, items, m.n, salt=211, model=ctx.cfg.model.path)
    scorer = SCORERS.get(m.scorer, "meta.scorer")
    # A scorer's set-up params (the `rewards` scorer's functions of `score.rewards`), without
    # `score.params`, which belong to the round's scorer.
    params = {**(scorer.setup(ctx).params if scorer.setup is not None else {}), "seed": ctx.seed}
    for g, scores in zip(groups, scorer.score_all(groups, params)):
        for r, s in zip(g["responses"], scores):
            r["score"] = None if s is None else float(s)
    s = ctx.cfg.select
    label = "checker" if m.scorer in REFERENCE_SCORERS else m.scorer
    tuples = select.meta_tuples(groups, min_score=m.min_score, require_format=s.require_format,
                                allow_truncated=s.allow_truncated, label=label,
                                reveal_reference=m.critique.reveal_reference)
    written = model_critiques(ctx, groups, tuples, label) if m.critique.source == "model" else {}
    qa = select.dedupe([{"prompt": t["prompt"], "response": t["refined"], "id": t["id"]} for t in tuples])
    write_jsonl(out / "scored.jsonl", groups)
    write_jsonl(out / "meta.jsonl", tuples)
    write_jsonl(out / "qa.jsonl", qa)
    info = {"prompts": len(items), "accepted_samples": sum(r["score"] is not None and r["score"] >= m.min_score
                                                           for g in groups for r in g["responses"]),
            "tuples": len(tuples), "incorrect_tuples": sum(not t["correct"] for t in tuples),
            "qa": len(qa), **written,
            **train_phase(ctx, out, meta_phase(ctx.cfg, m.epochs), tuples, ctx.cfg.model.path)}
    if info.get("model") and m.evaluate:
        info["eval"] = ctx.evaluate(str(out / info["model"]), out)
    return info


def model_critiques(ctx: RoundContext, groups: list[dict], tuples: list[dict], label: str) -> dict[str, Any]:
    """`meta.critique.source: model`: each tuple's feedback written by `meta.critique.model` (default
    the start model) given the reference answer and the label, then the label's verdict line. A
    critique `critique.honest` refuses keeps the template critique (`critique_source` says which)."""
    c = ctx.cfg.meta.critique
    items = {g["item"]["id"]: g["item"] for g in groups}
    prompts = [c.template.format(prompt=t["prompt"], previous=t["response"],
                                 reference=items[t["id"]].get("answer") or "(none)",
                                 label="correct" if t["correct"] else "incorrect") for t in tuples]
    comps = ctx.sampler(c.model or ctx.cfg.model.path).generate(
        prompts, ctx.sampling(c.max_new_tokens, c.temperature, salt=223),
        chat=ctx.cfg.prompts.chat, progress=ctx.progress) if tuples else []
    refused: collections.Counter = collections.Counter()
    for t, cs in zip(tuples, comps):
        why = critique.honest(cs[0].text, items[t["id"]], t["correct"], label)
        if why is None:
            t["feedback"], t["critique_source"] = critique.finish_model_critique(cs[0].text, t["correct"]), "model"
        else:
            t["critique_source"], t["critique_refused"] = "template", why
            refused[re.sub(r"-?\d[\d.,]*", "N", why)] += 1  # counted by kind, not by number
    return {"model_critiques": len(tuples) - sum(refused.values()), "critiques_refused": dict(refused)}
