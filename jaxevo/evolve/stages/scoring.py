"""The stages that turn responses into training data: the scorer's score for every response, then
SFT examples, preference pairs and the format-only control set. (DPSE's expansions, which add
scored prompts, are the `expand` stage: stages/dpse.py.)"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

from jaxevo.errors import ConfigError
from jaxevo.evolve import select
from jaxevo.checkers import checker_for
from jaxevo.evolve.censor import pair_weights
from jaxevo.evolve.context import RoundContext
from jaxevo.evolve.recipe import stage
from jaxevo.evolve.rundir import read_jsonl, write_jsonl
from jaxevo.evolve.scorers import Scorer, verifier
from jaxevo.evolve.stages.training import restart_views


@stage("score", reads=("groups.jsonl",), writes=("scored.jsonl",))
def score_stage(ctx: RoundContext, out: Path) -> dict[str, Any]:
    """The scorer's score for every response into scored.jsonl."""
    groups = read_jsonl(ctx.input("groups.jsonl"))
    scorer, params = ctx.scorer, ctx.scoring.params
    score_groups(scorer, groups, params)
    info: dict[str, Any] = {}
    # Agreement of the scorer with the verifier, where gold answers exist (judge quality), over
    # all graded responses and per checker (a probe's fact and a number are different tests).
    gold = [g for g in groups if g["item"].get("answer") not in (None, "")]
    if any(g["responses"] for g in gold) and scorer.score is not verifier:
        agree: dict[str, list[bool]] = collections.defaultdict(list)
        for g in gold:
            name = checker_for(g["item"]).name
            for r, v in zip(g["responses"], verifier(g, {})):
                if r["score"] is not None:
                    agree[name].append((r["score"] >= ctx.cfg.select.min_score) == bool(v))
        every = [a for v in agree.values() for a in v]
        info["judge_agreement"] = sum(every) / max(1, len(every))
        info["judge_agreement_by_checker"] = {k: {"agreement": sum(v) / len(v), "n": len(v)}
                                              for k, v in sorted(agree.items()) if v}
    write_jsonl(out / "scored.jsonl", groups)
    # None: a reward had no opinion or a judge stated no verdict (never accepted; left out of the mean).
    scores = [r["score"] for g in groups for r in g["responses"] if r["score"] is not None]
    samples = [r for g in groups for r in g["responses"] if r["kind"] == "sample"]
    n = sum(len(g["responses"]) for g in groups)
    return {"mean_score": sum(scores) / max(1, len(scores)), "responses": n, "unscored": n - len(scores),
            "samples": len(samples),
            "accepted_samples": sum(r["score"] is not None and r["score"] >= ctx.cfg.select.min_score
                                    for r in samples),
            **info}


def score_groups(scorer: Scorer, groups: list[dict], params) -> None:
    """Every response's score: one call for all groups when the scorer has a batch form (reward
    functions, as TRL calls them on a batch), else one call per group."""
    per_group = scorer.score_all(groups, params)
    for group, scores in zip(groups, per_group):
        if len(scores) != len(group["responses"]):
            raise ConfigError(f"scorer {scorer.name!r} returned {len(scores)} scores for "
                              f"{len(group['responses'])} responses (item {group['item'].get('id')})")
        for r, s in zip(group["responses"], scores):
            r["score"] = None if s is None else float(s)


@stage("data", reads=("scored.jsonl",), writes=("sft.jsonl", "pairs.jsonl", "control.jsonl"))
def data_stage(ctx: RoundContext, out: Path) -> dict[str, Any]:
    """SFT examples, preference pairs (weighted by topic frequency when the scorer asks) and the
    format-only control set; SELF's restart adds the kept rounds' data and the meta-skill tuples
    (every view, `meta.restart_views`; else only their QA pairs)."""
    groups = read_jsonl(ctx.input("scored.jsonl"))
    s = ctx.cfg.select
    pairs = []
    if s.pairs != "none":
        pairs = select.build_pairs(groups, mode=s.pairs, min_margin=s.min_margin,
                                   allow_truncated=s.allow_truncated)
        if ctx.scoring.topic_alpha:
            for p, w in zip(pairs, pair_weights([p.get("topic") for p in pairs], ctx.scoring.topic_alpha)):
                p["weight"] = w
    sft = []
    if s.sft == "accepted" and ctx.cfg.sft is not None:
        sft = select.build_sft(groups, min_score=s.min_score, max_per_prompt=s.max_per_prompt,
                               require_format=s.require_format, allow_truncated=s.allow_truncated)
    elif s.sft == "refine_views" and ctx.cfg.sft is not None:  # EVOLVE's SR-aware SFT
        sft = select.refine_views(pairs, ctx.cfg.refine.template)
    info: dict[str, Any] = {}
    if ctx.cfg.rounds.restart_from_base and sft:  # SELF restart: D_meta ∪ D_1 ∪ ... ∪ D_t
        for r in range(1, ctx.round):
            prev = ctx.output("data", r) / "sft.jsonl"
            if prev.exists() and ctx.run.stage_info(r, "gate").get("accepted") is not False:
                sft = select.dedupe(select.own_data(read_jsonl(prev)) + sft)
        if restart_views(ctx.cfg):  # every meta-skill view, the rounds' data as direct answers
            meta = read_jsonl(ctx.output("meta", 0) / "meta.jsonl")
            info["meta_tuples"] = len(meta)
            sft = select.with_meta_views(meta, sft)
        elif ctx.cfg.meta.enabled and (ctx.output("meta", 0) / "qa.jsonl").exists():
            sft = select.dedupe(read_jsonl(ctx.output("meta", 0) / "qa.jsonl") + sft)
    write_jsonl(out / "sft.jsonl", sft)
    write_jsonl(out / "pairs.jsonl", pairs)
    control = []
    if s.control:
        count = len(sft) if sft else len(pairs)
        control = select.format_control(groups, count, seed=ctx.seed,
                                        allow_truncated=s.allow_truncated)
        write_jsonl(out / "control.jsonl", control)
    return {"sft_examples": len(sft), "pairs": len(pairs), "control_examples": len(control),
            "yield_per_prompt": (len(sft) or len(pairs)) / max(1, len(groups)), **info}
