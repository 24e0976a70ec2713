"""From scored groups to training data: SFT examples, preference pairs, and the format-only control.

A scored group (one line of `score/scored.jsonl`):
    {"item": {...}, "prompt": str, "responses": [{"text", "logp", "length", "finish",
     "kind": "sample" | "refine", "chain": int, "step": int, "feedback": str | None,
     "score": float}, ...]}
`chain` numbers the samples of a prompt; a refinement keeps its sample's chain and step k.

Outputs are the JSONL records `jaxevo train` reads: {"prompt", "response"} for SFT and
{"prompt", "chosen", "rejected"} for preferences (plus "weight"/"margin"/"topic" where a recipe
sets them).
"""

from __future__ import annotations

import random
from typing import Any, Iterable, Mapping, Sequence

from jaxevo.data.answers import is_well_formatted

Group = Mapping[str, Any]


def _usable(r: Mapping[str, Any], require_format: bool) -> bool:
    # A response cut off by the length limit has no reliable ending: never train on it.
    return r.get("finish") != "length" and (not require_format or is_well_formatted(r["text"]))


def _ranked(responses: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Best first: score, then the model's own per-token log-prob (ties are deterministic)."""
    return sorted(responses, key=lambda r: (-r["score"], -r.get("logp", 0.0) / max(1, r.get("length", 1))))


def build_sft(groups: Iterable[Group], *, min_score: float = 0.5, max_per_prompt: int = 1,
              require_format: bool = True, kinds: Sequence[str] = ("sample", "refine")) -> list[dict]:
    """The accepted responses: score >= min_score, distinct texts, at most `max_per_prompt` each."""
    out = []
    for g in groups:
        seen: set[str] = set()
        cands = [r for r in g["responses"] if r.get("kind", "sample") in kinds
                 and r["score"] >= min_score and _usable(r, require_format)]
        for r in _ranked(cands):
            if r["text"] in seen or len(seen) >= max_per_prompt:
                continue
            seen.add(r["text"])
            out.append({"prompt": g["prompt"], "response": r["text"], "id": g["item"]["id"],
                        "score": r["score"], **_topic(g)})
    return out


def build_pairs(groups: Iterable[Group], *, mode: str = "score", min_margin: float = 0.5,
                require_format: bool = False) -> list[dict]:
    """One pair per prompt.

    mode="score": best vs worst response by score, kept if their margin >= `min_margin`.
    mode="rule":  EVOLVE's rule-based selection — chosen = the last refinement of the first chain,
                  rejected = the answer it started from; kept unless the scorer ranks it lower
                  by more than `min_margin` (set a negative margin to trust the rule blindly).
    """
    out = []
    for g in groups:
        rs = [r for r in g["responses"] if r.get("finish") != "length" or not require_format]
        if len(rs) < 2:
            continue
        if mode == "score":
            ranked = _ranked(rs)
            best, worst = ranked[0], ranked[-1]
            if best["score"] - worst["score"] < min_margin or best["text"] == worst["text"]:
                continue
        elif mode == "rule":
            chain = sorted((r for r in rs if r.get("chain", 0) == 0), key=lambda r: r.get("step", 0))
            if len(chain) < 2 or chain[0].get("step", 0) != 0:
                continue
            best, worst = chain[-1], chain[0]
            if best["text"] == worst["text"] or worst["score"] - best["score"] > min_margin:
                continue
        else:
            from jaxevo.errors import ConfigError

            raise ConfigError(f"select.pairs={mode!r}: choose 'score', 'rule' or 'none'")
        out.append({"prompt": g["prompt"], "chosen": best["text"], "rejected": worst["text"],
                    "id": g["item"]["id"], "margin": best["score"] - worst["score"], **_topic(g)})
    return out


def format_control(groups: Iterable[Group], count: int, seed: int) -> list[dict]:
    """`count` random well-formatted responses, one per prompt, ignoring every score: what SFT on
    the format alone gives (DESIGN.md: 22 such samples moved the base model 9.5% -> 15.5%)."""
    pool = []
    for g in groups:
        ok = [r for r in g["responses"] if r.get("kind", "sample") == "sample" and _usable(r, True)]
        if ok:
            pool.append((g, ok))
    rng = random.Random(seed)
    rng.shuffle(pool)
    return [{"prompt": g["prompt"], "response": rng.choice(ok)["text"], "id": g["item"]["id"]}
            for g, ok in pool[:count]]


def _topic(g: Group) -> dict[str, Any]:
    t = g["item"].get("topic")
    return {"topic": t} if t is not None else {}
