"""The stages that sample: the round's prompts, n answers per prompt, the model's feedback on them
(SELF) and chains of self-refinement (EVOLVE, SELF)."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

from jaxevo.data import load_source
from jaxevo.data.records import chat_of
from jaxevo.evolve import self_instruct, verdict
from jaxevo.evolve.context import RoundContext
from jaxevo.evolve.recipe import stage
from jaxevo.evolve.rundir import read_jsonl, write_jsonl
from jaxevo.train.objectives import self_refine_prompt


def response_record(cp, **kw) -> dict[str, Any]:
    """A sampled completion as a response of a group (text, log-prob, length, finish reason)."""
    return {"text": cp.text, "logp": float(cp.logprob), "length": cp.length,
            "finish": cp.finish_reason, **kw}


def sample_groups(ctx: RoundContext, items: list[dict], n: int, salt: int = 0, model: str | None = None,
                  **extra: Any) -> list[dict]:
    """One group per item: `n` answers sampled at `sample.temperature` (by `model`, default the
    round's start model), each response `kind="sample"` on its own chain."""
    c = ctx.cfg.sample
    comps = ctx.sampler(model).generate(
        [chat_of(it) for it in items], ctx.sampling(c.max_new_tokens, c.temperature, n=n, salt=salt, answers=True),
        chat=ctx.cfg.prompts.chat, progress=ctx.progress)
    return [{"item": it, "prompt": it["prompt"], **extra,
             "responses": [response_record(cp, kind="sample", chain=j, step=0) for j, cp in enumerate(cs)]}
            for it, cs in zip(items, comps)]


@stage("prompts", writes=("prompts.jsonl",))
def prompts_stage(ctx: RoundContext, out: Path) -> dict[str, Any]:
    """This round's slice of the prompt source (wrapping around when the source is exhausted);
    with `prompts.self_instruct` (SELF, rounds >= `from_round`), `share` of it replaced by
    questions the round's start model writes (evolve/self_instruct.py)."""
    items = ctx.prompt_pool()
    n = ctx.cfg.prompts.per_round
    start = ((ctx.round - 1) * n) % max(1, len(items))
    chosen = (items + items)[start:start + min(n, len(items))]
    si = ctx.cfg.prompts.self_instruct
    info: dict[str, Any] = {}
    if si.enabled and ctx.round >= si.from_round and chosen:
        new, info = self_instructed(ctx, round(si.share * len(chosen)))
        keep = len(chosen) - len(new) if si.fill_from_pool else len(chosen) - round(si.share * len(chosen))
        chosen = new + chosen[:keep]
    write_jsonl(out / "prompts.jsonl", chosen)
    return {"prompts": len(chosen), "first_id": chosen[0]["id"] if chosen else None, **info}


def self_instructed(ctx: RoundContext, wanted: int) -> tuple[list[dict], dict[str, Any]]:
    """Up to `wanted` new questions by the round's start model, well formed and unlike the pool's,
    the earlier rounds' new ones and each other (`prompts.self_instruct`)."""
    si = ctx.cfg.prompts.self_instruct
    pool = ctx.prompt_pool()
    pool_q = [self_instruct.question_of(it) for it in pool]
    earlier = [self_instruct.question_of(it) for r in range(1, ctx.round)
               for it in _prompts_of(ctx, r) if it.get("self_instructed")]
    index = self_instruct.RougeIndex(si.max_rouge, pool_q + earlier)
    # A held-out question written again must not become training data (evaluations and gate).
    held_out = {self_instruct.normal(self_instruct.question_of(it))
                for spec in (ctx.cfg.eval.source, ctx.cfg.eval.unseen_source, ctx.cfg.rounds.gate) if spec
                for it in load_source(spec)}
    wrapping = self_instruct.Wrapping.of(pool)
    shape = self_instruct.Shape.of(pool_q) if si.pool_shape else self_instruct.Shape()
    checkers = {it.get("checker") for it in pool}
    template_item = pool[0] if len(checkers) == 1 and pool else {}
    rng = random.Random(ctx.seed * 31 + 7)
    f = self_instruct.Filtered()
    candidates = requests = 0
    for attempt in range(si.attempts):
        missing = wanted - len(f.kept)
        if missing <= 0:
            break
        seeds = [self_instruct.draw_seeds(pool_q, earlier + f.kept, si.seeds, si.machine_seeds, rng)
                 for _ in range(math.ceil(missing * si.oversample))]
        comps = ctx.sampler().generate(
            [self_instruct.request(si.template, s) for s in seeds],
            ctx.sampling(si.max_new_tokens, si.temperature, salt=307 + attempt),
            chat=ctx.cfg.prompts.chat, progress=ctx.progress)
        requests += len(seeds)
        for s, cs in zip(seeds, comps):
            for q in self_instruct.parse_continuation(cs[0].text, cs[0].finish_reason == "length"):
                if len(f.kept) < wanted:
                    candidates += 1
                    f.offer(q, index, s, si, held_out, shape)
    new = [self_instruct.new_item(q, wrapping, ctx.round, template_item) for q in f.kept]
    return new, {"self_instructed": len(new), "wanted": wanted, "requests": requests,
                 "offered": candidates, "filtered": dict(sorted(f.reasons.items()))}


def _prompts_of(ctx: RoundContext, round_: int) -> list[dict]:
    p = ctx.output("prompts", round_) / "prompts.jsonl"
    return read_jsonl(p) if p.exists() else []


@stage("generate", reads=("prompts.jsonl",), writes=("groups.jsonl",))
def generate_stage(ctx: RoundContext, out: Path) -> dict[str, Any]:
    """`sample.n` sampled answers per prompt (y0)."""
    groups = sample_groups(ctx, read_jsonl(ctx.input("prompts.jsonl")), ctx.cfg.sample.n)
    write_jsonl(out / "groups.jsonl", groups)
    return {"responses": sum(len(g["responses"]) for g in groups), **ctx.sampler_stats()}


@stage("feedback", reads=("groups.jsonl",), writes=("groups.jsonl",))
def feedback_stage(ctx: RoundContext, out: Path) -> dict[str, Any]:
    """The feedback of the model (or of the scorer's feedback model) on every answer (SELF); a
    copy of the groups when `feedback.enabled` is off."""
    groups = read_jsonl(ctx.input("groups.jsonl"))
    f = ctx.cfg.feedback
    if f.enabled:
        write_feedback(ctx, [(g, r) for g in groups for r in g["responses"]])
    write_jsonl(out / "groups.jsonl", groups)
    return {"enabled": f.enabled}


def write_feedback(ctx: RoundContext, todo: list[tuple[dict, dict]]) -> None:
    """The feedback on each (group, response) into r["feedback"], written by the scorer's
    feedback model (`ScorerSetup.feedback_model`) or the round's model."""
    if not todo:
        return
    f = ctx.cfg.feedback
    sampler = ctx.sampler(ctx.scoring.feedback_model)
    prompts = [f.template.format(prompt=g["prompt"], previous=r["text"]) for g, r in todo]
    comps = sampler.generate(prompts, ctx.sampling(f.max_new_tokens, f.temperature),
                             chat=ctx.cfg.prompts.chat, progress=ctx.progress)
    for (_, r), cs in zip(todo, comps):
        r["feedback"] = cs[0].text


@stage("refine", reads=("groups.jsonl",), writes=("groups.jsonl",))
def refine_stage(ctx: RoundContext, out: Path) -> dict[str, Any]:
    """Chain of self-refinement: y_k = model(refine(x, y_{k-1})). With `only_if_rejected` (SELF)
    only answers whose feedback judged them incorrect are refined, once per step."""
    groups = read_jsonl(ctx.input("groups.jsonl"))
    rc = ctx.cfg.refine
    made = 0
    for step in range(1, rc.steps + 1):
        todo = []
        for g in groups:
            for chain in {r["chain"] for r in g["responses"]}:
                last = max((r for r in g["responses"] if r["chain"] == chain), key=lambda r: r["step"])
                if last["step"] != step - 1:
                    continue
                if rc.only_if_rejected and verdict.parse_verdict(last.get("feedback")) != 0.0:
                    continue
                todo.append((g, last))
        if not todo:
            break
        # With a feedback stage (SELF) the refinement acts on the feedback, as in meta-skill training.
        prompts = [self_refine_prompt(rc.template, g["prompt"], r["text"], r.get("feedback")) for g, r in todo]
        comps = ctx.sampler().generate(prompts, ctx.sampling(rc.max_new_tokens, rc.temperature, salt=step, answers=True),
                                       chat=ctx.cfg.prompts.chat, progress=ctx.progress)
        new = []
        for (g, r), cs in zip(todo, comps):
            resp = response_record(cs[0], kind="refine", chain=r["chain"], step=step)
            g["responses"].append(resp)
            new.append((g, resp))
        made += len(new)
        if ctx.cfg.feedback.enabled:  # SELF re-judges every refinement (f^ ~ M(.|p, r^))
            write_feedback(ctx, new)
    write_jsonl(out / "groups.jsonl", groups)
    return {"refinements": made}
