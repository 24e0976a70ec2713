"""The stages of one round, in order. Each is a function `(ctx, out_dir) -> info` registered in
`STAGES`; it reads earlier stages' files, writes its own into `out_dir` (a `.partial` folder the
driver renames when the stage returns) and returns a small JSON-able dict for the manifest.

    prompts    this round's slice of the prompt source                 prompts.jsonl
    generate   n sampled answers per prompt (y0)                       groups.jsonl
    feedback   the model's critique of every answer (SELF)             groups.jsonl (+feedback)
    refine     a chain of k self-refinements per answer (EVOLVE/SELF)  groups.jsonl (+refinements)
    score      the scorer's score for every response (+ DPSE expansion) scored.jsonl
    data       SFT examples, preference pairs, the format-only control  sft.jsonl, pairs.jsonl, ...
    sft        phase 1 training (resumes from its own checkpoints)      train/final = model
    preference phase 2 training, reference log-probs computed once      train/final = model
    control    format-only control arm: same count, no scorer          train/final, eval.json
    eval       held-out accuracy of the round's model                  results.jsonl, eval.json
    gate       keep the round's model only if not worse on validation  start/, round/ (results)
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
from pathlib import Path
from typing import Any, Callable

from jaxevo import distributed
from jaxevo.evolve import select
from jaxevo.evolve.rundir import read_jsonl, write_jsonl
from jaxevo.evolve.scorers import get_scorer

Stage = Callable[["Ctx", Path], dict[str, Any]]
STAGES: dict[str, Stage] = {}
ORDER = ("prompts", "generate", "feedback", "refine", "score", "data", "sft", "preference",
         "control", "eval", "gate")


def stage(name: str):
    def deco(fn: Stage) -> Stage:
        STAGES[name] = fn
        return fn
    return deco


# ---------------------------------------------------------------------------------- prompts
@stage("prompts")
def prompts_stage(ctx, out: Path) -> dict[str, Any]:
    cfg = ctx.cfg.prompts
    items = ctx.prompt_pool()
    n = cfg.per_round
    start = ((ctx.round - 1) * n) % max(1, len(items))
    chosen = (items + items)[start:start + min(n, len(items))]  # wraps when the pool is exhausted
    write_jsonl(out / "prompts.jsonl", chosen)
    return {"prompts": len(chosen), "first_id": chosen[0]["id"] if chosen else None}


# ---------------------------------------------------------------------------------- generate
@stage("generate")
def generate_stage(ctx, out: Path) -> dict[str, Any]:
    c = ctx.cfg.sample
    items = read_jsonl(ctx.output("prompts") / "prompts.jsonl")
    comps = ctx.sampler().generate(
        [it["prompt"] for it in items], ctx.sampling(c.max_new_tokens, c.temperature, n=c.n),
        chat=ctx.cfg.prompts.chat, progress=ctx.progress)
    groups = []
    for it, cs in zip(items, comps):
        groups.append({"item": it, "prompt": it["prompt"], "responses": [
            _response(cp, kind="sample", chain=j, step=0) for j, cp in enumerate(cs)]})
    write_jsonl(out / "groups.jsonl", groups)
    return {"responses": sum(len(g["responses"]) for g in groups), **ctx.sampler_stats()}


def _response(cp, **kw) -> dict[str, Any]:
    return {"text": cp.text, "logp": float(cp.logprob), "length": cp.length,
            "finish": cp.finish_reason, **kw}


# ---------------------------------------------------------------------------------- feedback
@stage("feedback")
def feedback_stage(ctx, out: Path) -> dict[str, Any]:
    groups = read_jsonl(ctx.previous_groups("feedback"))
    f = ctx.cfg.feedback
    if f.enabled:
        _write_feedback(ctx, [(g, r) for g in groups for r in g["responses"]])
    write_jsonl(out / "groups.jsonl", groups)
    return {"enabled": f.enabled}


def _write_feedback(ctx, todo: list[tuple[dict, dict]]) -> None:
    """The feedback of the model (or `score.judge_model`) on each (group, response): r["feedback"]."""
    if not todo:
        return
    f = ctx.cfg.feedback
    sampler = ctx.judge_sampler() if ctx.cfg.score.scorer == "judge" else ctx.sampler()
    prompts = [f.template.format(prompt=g["prompt"], previous=r["text"]) for g, r in todo]
    comps = sampler.generate(prompts, ctx.sampling(f.max_new_tokens, f.temperature),
                             chat=ctx.cfg.prompts.chat, progress=ctx.progress)
    for (_, r), cs in zip(todo, comps):
        r["feedback"] = cs[0].text


# ---------------------------------------------------------------------------------- refine
@stage("refine")
def refine_stage(ctx, out: Path) -> dict[str, Any]:
    """Chain of self-refinement: y_k = model(refine(x, y_{k-1})). With `only_if_rejected` (SELF)
    only answers whose feedback judged them incorrect are refined, once per step."""
    from jaxevo.evolve.scorers import parse_verdict
    from jaxevo.train.objectives import self_refine_prompt

    groups = read_jsonl(ctx.previous_groups("refine"))
    rc = ctx.cfg.refine
    made = 0
    for step in range(1, rc.steps + 1):
        todo = []
        for g in groups:
            for chain in {r["chain"] for r in g["responses"]}:
                last = max((r for r in g["responses"] if r["chain"] == chain), key=lambda r: r["step"])
                if last["step"] != step - 1:
                    continue
                if rc.only_if_rejected and parse_verdict(last.get("feedback")) != 0.0:
                    continue
                todo.append((g, last))
        if not todo:
            break
        # With a feedback stage (SELF) the refinement acts on the feedback, as in meta-skill training.
        prompts = [self_refine_prompt(rc.template, g["prompt"], r["text"], r.get("feedback")) for g, r in todo]
        comps = ctx.sampler().generate(prompts, ctx.sampling(rc.max_new_tokens, rc.temperature, salt=step),
                                       chat=ctx.cfg.prompts.chat, progress=ctx.progress)
        new = []
        for (g, r), cs in zip(todo, comps):
            resp = _response(cs[0], kind="refine", chain=r["chain"], step=step)
            g["responses"].append(resp)
            new.append((g, resp))
        made += len(new)
        if ctx.cfg.feedback.enabled:  # SELF re-judges every refinement (f^ ~ M(.|p, r^))
            _write_feedback(ctx, new)
    write_jsonl(out / "groups.jsonl", groups)
    return {"refinements": made}


# ---------------------------------------------------------------------------------- score
@stage("score")
def score_stage(ctx, out: Path) -> dict[str, Any]:
    groups = read_jsonl(ctx.previous_groups("score"))
    sc = ctx.cfg.score
    scorer = get_scorer(sc.scorer)
    params = dict(sc.params, seed=ctx.seed)
    if sc.scorer == "censor":
        params.setdefault("weights", ctx.cfg.censor.weights)
        params.setdefault("quality", ctx.cfg.censor.quality)
    for g in groups:
        for r, s in zip(g["responses"], scorer(g, params)):
            r["score"] = float(s)
    info: dict[str, Any] = {}
    if sc.scorer == "censor" and ctx.cfg.censor.expand_topics > 0:
        groups, info = _topic_expansion(ctx, groups, scorer, params)
    # Agreement of the scorer with the verifier, where gold answers exist (judge quality).
    gold = [(g, r) for g in groups for r in g["responses"] if g["item"].get("answer") not in (None, "")]
    if gold and sc.scorer != "verifier":
        from jaxevo.evolve.scorers import verifier

        agree = [(r["score"] >= ctx.cfg.select.min_score) == bool(v)
                 for g in groups if g["item"].get("answer") not in (None, "")
                 for r, v in zip(g["responses"], verifier(g, {}))]
        info["judge_agreement"] = sum(agree) / len(agree)
    write_jsonl(out / "scored.jsonl", groups)
    scores = [r["score"] for g in groups for r in g["responses"]]
    samples = [r for g in groups for r in g["responses"] if r["kind"] == "sample"]
    return {"mean_score": sum(scores) / max(1, len(scores)), "responses": len(scores),
            "accepted_samples": sum(r["score"] >= ctx.cfg.select.min_score for r in samples),
            **info}


def _topic_expansion(ctx, groups, scorer, params):
    """DPSE topic-aware expansion: more prompts from the topics users were least satisfied with
    (weighted by topic frequency), answered and scored like the rest."""
    from jaxevo.evolve.censor import topic_stats, worst_topics

    stats = topic_stats(groups)
    topics = worst_topics(stats, ctx.cfg.censor.expand_topics)
    used = {g["item"]["id"] for g in groups}
    extra = [it for it in ctx.prompt_pool() if it.get("topic") in topics and it["id"] not in used]
    random.Random(ctx.seed).shuffle(extra)
    extra = extra[: max(1, len(groups) // 2)]
    c = ctx.cfg.sample
    comps = ctx.sampler().generate([it["prompt"] for it in extra],
                                   ctx.sampling(c.max_new_tokens, c.temperature, n=c.n, salt=101),
                                   chat=ctx.cfg.prompts.chat, progress=ctx.progress)
    new = []
    for it, cs in zip(extra, comps):
        g = {"item": it, "prompt": it["prompt"], "expanded": True, "responses": [
            _response(cp, kind="sample", chain=j, step=0) for j, cp in enumerate(cs)]}
        for r, s in zip(g["responses"], scorer(g, params)):
            r["score"] = float(s)
        new.append(g)
    return groups + new, {"expanded_topics": topics, "expanded_prompts": len(new),
                          "topic_stats": stats}


# ---------------------------------------------------------------------------------- data
@stage("data")
def data_stage(ctx, out: Path) -> dict[str, Any]:
    groups = read_jsonl(ctx.output("score") / "scored.jsonl")
    s = ctx.cfg.select
    pairs = []
    if s.pairs != "none":
        pairs = select.build_pairs(groups, mode=s.pairs, min_margin=s.min_margin,
                                   allow_truncated=s.allow_truncated)
        if ctx.cfg.censor.topic_alpha and ctx.cfg.score.scorer == "censor":
            from jaxevo.evolve.censor import pair_weights

            for p, w in zip(pairs, pair_weights([p.get("topic") for p in pairs], ctx.cfg.censor.topic_alpha)):
                p["weight"] = w
    sft = []
    if s.sft == "accepted" and ctx.cfg.sft is not None:
        sft = select.build_sft(groups, min_score=s.min_score, max_per_prompt=s.max_per_prompt,
                               require_format=s.require_format, allow_truncated=s.allow_truncated)
    elif s.sft == "refine_views" and ctx.cfg.sft is not None:  # EVOLVE's SR-aware SFT
        sft = select.refine_views(pairs, ctx.cfg.refine.template)
    if ctx.cfg.rounds.restart_from_base and sft:  # SELF restart: D_meta(QA) ∪ D_1 ∪ ... ∪ D_t
        meta_qa = ctx.run.stage_dir(0, 0, "meta") / "qa.jsonl"
        if ctx.cfg.meta.enabled and meta_qa.exists():
            sft = _dedupe(read_jsonl(meta_qa) + sft)
        for r in range(1, ctx.round):
            prev = ctx.run.stage_dir(r, ORDER.index("data") + 1, "data") / "sft.jsonl"
            if prev.exists() and ctx.run.stage_info(r, "gate").get("accepted") is not False:
                sft = _dedupe(read_jsonl(prev) + sft)
    write_jsonl(out / "sft.jsonl", sft)
    write_jsonl(out / "pairs.jsonl", pairs)
    control = []
    if s.control:
        count = len(sft) if sft else len(pairs)
        control = select.format_control(groups, count, seed=ctx.seed,
                                        allow_truncated=s.allow_truncated)
        write_jsonl(out / "control.jsonl", control)
    n_prompts = len(groups)
    return {"sft_examples": len(sft), "pairs": len(pairs), "control_examples": len(control),
            "yield_per_prompt": (len(sft) or len(pairs)) / max(1, n_prompts)}


def _dedupe(records):
    seen, out = set(), []
    for r in records:
        key = (r["prompt"], r["response"])
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


# ---------------------------------------------------------------------------------- training
def _train_phase(ctx, out: Path, phase_cfg, records: list[dict], start_model: str,
                 reference: str | None = None) -> dict[str, Any]:
    from jaxevo.train.loop import train

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
    result = train(tc, records=records, stop_at=ctx.stop_at, mesh=ctx.mesh)
    if result.export_dir is None:
        raise _Interrupted(f"training stopped at step {result.steps} (stop_at)")
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


class _Interrupted(Exception):
    """Raised when a test asks training to stop mid-phase (simulated kill)."""


@stage("sft")
def sft_stage(ctx, out: Path) -> dict[str, Any]:
    if ctx.cfg.sft is None:
        return {"skipped": "no sft phase", "model": None}
    records = read_jsonl(ctx.output("data") / "sft.jsonl")
    start = ctx.base_path if ctx.cfg.rounds.restart_from_base else ctx.start_model()
    return _train_phase(ctx, out, ctx.cfg.sft, records, start)


@stage("preference")
def preference_stage(ctx, out: Path) -> dict[str, Any]:
    if ctx.cfg.preference is None:
        return {"skipped": "no preference phase", "model": None}
    records = read_jsonl(ctx.output("data") / "pairs.jsonl")
    start = ctx.latest_model()
    reference = ctx.start_model() if ctx.cfg.rounds.reference == "previous" else None
    return _train_phase(ctx, out, ctx.cfg.preference, records, start, reference=reference)


# ---------------------------------------------------------------------------------- meta (SELF)
@stage("meta")
def meta_stage(ctx, out: Path) -> dict[str, Any]:
    """SELF's round 0 (see `config.MetaSection`): sample the last `meta.prompts` prompts of the
    source, score them, build (question, answer, feedback, refined) tuples and train the
    meta-skill objective from the start model. Writes meta.jsonl, qa.jsonl (the direct-answer
    view, mixed into later rounds' SFT data), the model, and its evaluation."""
    m = ctx.cfg.meta
    pool = ctx.prompt_pool()
    items = pool[-min(m.prompts, len(pool)):]
    c = ctx.cfg.sample
    comps = ctx.sampler(ctx.cfg.model.path).generate(
        [it["prompt"] for it in items], ctx.sampling(c.max_new_tokens, c.temperature, n=m.n, salt=211),
        chat=ctx.cfg.prompts.chat, progress=ctx.progress)
    scorer = get_scorer(m.scorer)
    groups = []
    for it, cs in zip(items, comps):
        g = {"item": it, "prompt": it["prompt"],
             "responses": [_response(cp, kind="sample", chain=j, step=0) for j, cp in enumerate(cs)]}
        for r, s in zip(g["responses"], scorer(g, {"seed": ctx.seed})):
            r["score"] = float(s)
        groups.append(g)
    s = ctx.cfg.select
    tuples = select.meta_tuples(groups, min_score=m.min_score, require_format=s.require_format,
                                allow_truncated=s.allow_truncated)
    qa = _dedupe([{"prompt": t["prompt"], "response": t["refined"], "id": t["id"]} for t in tuples])
    write_jsonl(out / "scored.jsonl", groups)
    write_jsonl(out / "meta.jsonl", tuples)
    write_jsonl(out / "qa.jsonl", qa)
    phase = ctx.cfg.sft.replace(
        epochs=m.epochs, steps=None, data=dataclasses.replace(ctx.cfg.sft.data, max_length=m.max_length),
        objective=dataclasses.replace(ctx.cfg.sft.objective, name="self_meta", hparams={"beta": m.beta}))
    info = {"prompts": len(items), "accepted_samples": sum(r["score"] >= m.min_score for g in groups
                                                           for r in g["responses"]),
            "tuples": len(tuples), "incorrect_tuples": sum("incorrect" in t["feedback"] for t in tuples),
            "qa": len(qa), **_train_phase(ctx, out, phase, tuples, ctx.cfg.model.path)}
    if info.get("model") and m.evaluate:
        info["eval"] = ctx.evaluate(str(out / info["model"]), out)
    return info


# ---------------------------------------------------------------------------------- eval
@stage("control")
def control_stage(ctx, out: Path) -> dict[str, Any]:
    if not ctx.cfg.select.control or ctx.cfg.sft is None:
        return {"skipped": "control off"}
    records = read_jsonl(ctx.output("data") / "control.jsonl")
    info = _train_phase(ctx, out, ctx.cfg.sft, records, ctx.start_model())
    if info.get("model"):
        info["eval"] = ctx.evaluate(str(out / info["model"]), out)
    return info


@stage("eval")
def eval_stage(ctx, out: Path) -> dict[str, Any]:
    info = {"model": ctx.latest_model(), **ctx.evaluate(ctx.latest_model(), out)}
    prev = ctx.run.stage_dir(ctx.round - 1, ORDER.index("eval") + 1, "eval") / "results.jsonl"
    if distributed.is_main() and prev.exists():  # process 0 wrote results.jsonl and the manifest
        info["vs_previous"] = win_rate(read_jsonl(prev), read_jsonl(out / "results.jsonl"))
    return info


@stage("gate")
def gate_stage(ctx, out: Path) -> dict[str, Any]:
    """Keep the round's model only if its greedy accuracy on the labelled validation items of
    `rounds.gate` is at least the kept model's (the round's start model) + `gate_min_gain`. The
    kept model's accuracy comes from the previous round's gate, or is measured here (round 1)."""
    r = ctx.cfg.rounds
    if not r.gate:
        return {"skipped": "gate off"}
    new = ctx.latest_model()
    prev = ctx.run.stage_info(ctx.round - 1, "gate")
    if new == ctx.start_model():  # nothing to judge; the kept model and its accuracy carry over
        carried = {"kept_accuracy": prev["kept_accuracy"]} if "kept_accuracy" in prev else {}
        return {"skipped": "the round trained no model", **carried}
    if "kept_accuracy" in prev:
        start_acc = prev["kept_accuracy"]
    else:
        start_acc = ctx.evaluate(ctx.start_model(), out / "start", source=r.gate)["accuracy"]
    acc = ctx.evaluate(new, out / "round", source=r.gate)["accuracy"]
    accepted = acc - start_acc >= r.gate_min_gain
    return {"accepted": accepted, "accuracy": acc, "start_accuracy": start_acc,
            "kept_accuracy": acc if accepted else start_acc}


def win_rate(before: list[dict], after: list[dict]) -> dict[str, Any]:
    """Paired comparison of two evaluations of the same items (by id): a win is an item the new
    model gets right and the previous one wrong; win_rate = (wins + ties / 2) / items."""
    old = {r["id"]: bool(r["correct"]) for r in before}
    pairs = [(old[r["id"]], bool(r["correct"])) for r in after if r["id"] in old]
    wins = sum(b and not a for a, b in pairs)
    losses = sum(a and not b for a, b in pairs)
    n = len(pairs)
    return {"win_rate": (wins + (n - wins - losses) / 2) / n if n else None, "wins": wins,
            "losses": losses, "items": n}


def write_json(path: Path, obj: Any) -> None:
    """Process 0 writes (see `rundir`); the other processes skip."""
    if distributed.is_main():
        path.write_text(json.dumps(obj, indent=2, default=str))
