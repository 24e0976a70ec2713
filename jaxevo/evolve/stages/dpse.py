"""DPSE's own stages: the logged answers join the round's groups (`logged`), and the two generative
expansions add new prompts, answered and scored like the rest (`expand`)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from jaxevo.evolve import expansion
from jaxevo.evolve.censor import topic_stats, worst_topics
from jaxevo.evolve.context import RoundContext
from jaxevo.evolve.recipe import stage
from jaxevo.evolve.rundir import read_jsonl, write_jsonl
from jaxevo.evolve.stages.sampling import sample_groups
from jaxevo.evolve.stages.scoring import score_groups


@stage("logged", reads=("groups.jsonl",), writes=("groups.jsonl",))
def logged_stage(ctx: RoundContext, out: Path) -> dict[str, Any]:
    """Each prompt's logged answer (from an interaction log) joins its group as a response of
    kind "logged", with the user's reaction the Censor reads; prompts without one are unchanged."""
    groups = read_jsonl(ctx.input("groups.jsonl"))
    n = 0
    for g in groups:
        logged = g["item"].get("logged")
        if logged and isinstance(logged.get("text"), str):
            g["responses"].append({"text": logged["text"], "kind": "logged", "chain": -1, "step": 0,
                                   "finish": "stop",
                                   "reaction": {k: logged.get(k) for k in ("next_user", "rating", "thumb")}})
            n += 1
    write_jsonl(out / "groups.jsonl", groups)
    return {"logged_answers": n}


@stage("expand", reads=("scored.jsonl",), writes=("scored.jsonl",))
def expand_stage(ctx: RoundContext, out: Path) -> dict[str, Any]:
    """Topic-aware and preference-driven expansion (evolve/expansion.py): the round's model writes
    new prompts on the worst-satisfied topics and variants of well-received exchanges; the new
    ones that are well formed and not near-duplicates get `sample.n` answers, scored."""
    groups = read_jsonl(ctx.input("scored.jsonl"))
    x = dict(ctx.scoring.expansion)
    rng = random.Random(ctx.seed)
    stats = topic_stats(groups)
    requests: list[tuple[str, str, int, str | None, dict]] = []  # (how, prompt, n, topic, like)
    topics = worst_topics(stats, ctx.scoring.expand_topics) if ctx.scoring.expand_topics > 0 else []
    for t in topics:
        items = [g["item"] for g in groups if (g["item"].get("topic") or "none") == t]
        seeds = rng.sample(items, min(len(items), int(x.get("seeds", 4))))
        if seeds:
            requests.append(("topic", expansion.topic_request(t, [s["prompt"] for s in seeds]),
                             int(x.get("per_topic", 16)), t, seeds[0]))
    liked = sorted(((r["score"], g["item"]["id"], g) for g in groups for r in g["responses"]
                    if r.get("score") is not None and r["score"] >= float(x.get("min_score", 0.8))),
                   key=lambda s: (-s[0], s[1]))
    best, seen = [], set()
    for _, gid, g in liked:  # one variant request per exchange, best received first
        if gid not in seen and len(best) < int(x.get("variants", 0)):
            seen.add(gid)
            best.append(g["item"])
    requests += [("variant", expansion.variant_request(it["prompt"]), 1, it.get("topic"), it) for it in best]
    info: dict[str, Any] = {"expanded_topics": topics, "topic_stats": stats, "generated": 0, "malformed": 0,
                            "duplicates": 0, "expanded_prompts": 0, "variant_prompts": 0,
                            "variant_requests": len(best)}
    if not requests:
        write_jsonl(out / "scored.jsonl", groups)
        return info
    texts = _generate(ctx, requests, x)
    dedupe = expansion.Deduper([it["prompt"] for it in ctx.prompt_pool()] + [g["item"]["prompt"] for g in groups],
                               float(x.get("max_overlap", 0.7)))
    new_items = []
    for (how, _, _, topic, like), outs in zip(requests, texts):
        for text in outs:
            info["generated"] += 1
            prompt = expansion.parse_generated(text)
            if prompt is None:
                info["malformed"] += 1
            elif not dedupe.keep(prompt):
                info["duplicates"] += 1
            else:
                new_items.append(expansion.new_item(prompt, topic, how, like))
    new = sample_groups(ctx, new_items, ctx.cfg.sample.n, salt=101) if new_items else []
    for g in new:
        g["expanded"] = g["item"]["expanded"]
    score_groups(ctx.scorer, new, ctx.scoring.params)
    info["expanded_prompts"] = sum(g["expanded"] == "topic" for g in new)
    info["variant_prompts"] = sum(g["expanded"] == "variant" for g in new)
    write_jsonl(out / "scored.jsonl", groups + new)
    return info


def _generate(ctx: RoundContext, requests, x) -> list[list[str]]:
    """The round's model's new-prompt texts, `n` per request (requests of equal n in one call)."""
    out: list[list[str]] = [[] for _ in requests]
    for n in sorted({r[2] for r in requests}):
        idx = [i for i, r in enumerate(requests) if r[2] == n]
        comps = ctx.sampler().generate(
            [requests[i][1] for i in idx],
            ctx.sampling(int(x.get("max_new_tokens", 64)), float(x.get("temperature", 0.9)), n=n, salt=211 + n),
            chat=ctx.cfg.prompts.chat, progress=ctx.progress)
        for i, cs in zip(idx, comps):
            out[i] = [c.text for c in cs]
    return out
