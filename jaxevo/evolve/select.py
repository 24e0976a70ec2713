"""From scored groups to training data: SFT examples, preference pairs, and the format-only control.

A scored group (one line of `score/scored.jsonl`):
    {"item": {...}, "prompt": str, "responses": [{"text", "logp", "length", "finish",
     "kind": "sample" | "refine", "chain": int, "step": int, "feedback": str | None,
     "score": float}, ...]}
`chain` numbers the samples of a prompt; a refinement keeps its sample's chain and step k.

Scores are in the scorer's units ([0, 1] for the built-in scorers, the weighted reward for
`rewards`), so `min_score` and `min_margin` are too. A None score (no reward function had an
opinion) is never accepted and never in a pair.

Outputs are the JSONL records `jaxevo train` reads: {"prompt", "response"} for SFT and
{"prompt", "chosen", "rejected"} for preferences (plus "weight"/"margin"/"topic" where a recipe
sets them).
"""

from __future__ import annotations

import random
from typing import Any, Iterable, Mapping, Sequence

from jaxevo.checkers import checker_for
from jaxevo.evolve import critique
from jaxevo.errors import ConfigError

Group = Mapping[str, Any]


def _usable(r: Mapping[str, Any], item: Mapping[str, Any], require_format: bool,
            allow_truncated: bool = False) -> bool:
    # A response cut off by the length limit has no reliable ending: do not train on it.
    # The format is the one the item's checker asks for (a number after "The answer is", a
    # letter among the choices, a probe's one short sentence...).
    return ((allow_truncated or r.get("finish") != "length")
            and (not require_format or checker_for(item).well_formatted(r["text"], item)))


def _graded(responses: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The responses the scorer gave a score: a judge that states no verdict gives None, and such
    a response is neither accepted nor paired (never a default score)."""
    return [r for r in responses if r.get("score") is not None]


def _margin(best: Mapping[str, Any], worst: Mapping[str, Any]) -> float | None:
    return None if best.get("score") is None or worst.get("score") is None else best["score"] - worst["score"]


def _ranked(responses: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Best first: score, then the model's own per-token log-prob (ties are deterministic).
    Unscored responses (None: no reward function had an opinion) are left out."""
    return sorted((r for r in responses if r["score"] is not None), key=lambda r: (-r["score"], -r.get("logp", 0.0) / max(1, r.get("length", 1))))


def build_sft(groups: Iterable[Group], *, min_score: float = 0.5, max_per_prompt: int = 1,
              require_format: bool = True, allow_truncated: bool = False,
              kinds: Sequence[str] = ("sample", "refine", "logged")) -> list[dict]:
    """The accepted responses: score >= min_score, distinct texts, at most `max_per_prompt` each
    (a logged answer from an interaction log counts like a sample)."""
    out = []
    for g in groups:
        seen: set[str] = set()
        cands = [r for r in _graded(g["responses"]) if r.get("kind", "sample") in kinds
                 and r["score"] >= min_score and _usable(r, g["item"], require_format, allow_truncated)]
        for r in _ranked(cands):
            if r["text"] in seen or len(seen) >= max_per_prompt:
                continue
            seen.add(r["text"])
            out.append({"prompt": g["prompt"], "response": r["text"], "id": g["item"]["id"],
                        "score": r["score"], **_topic(g), **_chat(g)})
    return out


def build_pairs(groups: Iterable[Group], *, mode: str = "score", min_margin: float = 0.5,
                allow_truncated: bool = False) -> list[dict]:
    """One pair per prompt.

    mode="score": best vs worst response by score, kept if their margin >= `min_margin`.
    mode="rule":  EVOLVE's rule-based selection — chosen = the last refinement of the first chain,
                  rejected = the answer it started from; kept unless the scorer ranks it lower
                  by more than `min_margin` (set a negative margin to trust the rule blindly).
    """
    out = []
    for g in groups:
        # A truncated response may be the rejected one, never the chosen one.
        rs = _graded(g["responses"]) if mode == "score" else list(g["responses"])
        if len(rs) < 2:
            continue
        if mode == "score":
            ranked = _ranked(rs)
            best = next((r for r in ranked if _usable(r, g["item"], False, allow_truncated)), None)
            if best is None:
                continue
            worst = ranked[-1]
            if best["score"] - worst["score"] < min_margin or best["text"] == worst["text"]:
                continue
        elif mode == "rule":
            chain = sorted((r for r in rs if r.get("chain", 0) == 0), key=lambda r: r.get("step", 0))
            if len(chain) < 2 or chain[0].get("step", 0) != 0:
                continue
            best, worst = chain[-1], chain[0]
            margin = _margin(best, worst)  # None: the scorer ranked one of them not at all
            if (not _usable(best, g["item"], False, allow_truncated) or best["text"] == worst["text"]
                    or (margin is not None and -margin > min_margin)):
                continue
        else:
            raise ConfigError(f"select.pairs={mode!r}: choose 'score', 'rule' or 'none'")
        out.append({"prompt": g["prompt"], "chosen": best["text"], "rejected": worst["text"],
                    "id": g["item"]["id"], "margin": _margin(best, worst), **_topic(g), **_chat(g)})
    return out


def refine_views(pairs: Iterable[Mapping[str, Any]], template: str) -> list[dict]:
    """EVOLVE's self-refinement-aware SFT as plain SFT records: for a pair (x, y_w, y_l),
    -[log p(y_w | x) + log p(y_w | x, y_l, z)] is the NLL of two examples — answer x with y_w, and
    rewrite y_l into y_w under the refinement template z."""
    out = []
    for p in pairs:
        out.append({"prompt": p["prompt"], "response": p["chosen"], "id": p["id"], "view": "direct"})
        out.append({"prompt": template.format(prompt=p["prompt"], previous=p["rejected"]),
                    "response": p["chosen"], "id": p["id"], "view": "refine"})
    return out


def format_control(groups: Iterable[Group], count: int, seed: int,
                   allow_truncated: bool = False) -> list[dict]:
    """`count` random well-formatted responses (in the shape each item asks for), one per prompt,
    ignoring every score: what SFT on the format alone gives (see DESIGN.md)."""
    pool = []
    for g in groups:
        ok = [r for r in g["responses"] if r.get("kind", "sample") == "sample"
              and _usable(r, g["item"], True, allow_truncated)]
        if ok:
            pool.append((g, ok))
    rng = random.Random(seed)
    rng.shuffle(pool)
    return [{"prompt": g["prompt"], "response": rng.choice(ok)["text"], "id": g["item"]["id"], **_chat(g)}
            for g, ok in pool[:count]]


def meta_tuples(groups: Iterable[Group], *, min_score: float = 1.0, require_format: bool = True,
                allow_truncated: bool = False, label: str = "checker",
                reveal_reference: bool = True) -> list[dict]:
    """SELF's meta-skill tuples {"prompt", "response", "feedback", "refined", "correct"} from
    scored samples: a sample scoring >= `min_score` is labelled correct and is its own refinement;
    any other sample is labelled incorrect and gets, as its refinement, the best accepted sample of
    the same prompt (one whose calculation steps all check out first). Prompts without an accepted
    sample give no tuple (there is nothing to refine towards). The feedback is the template
    critique of `critique.template_critique` (what is wrong and why, from checkable facts; `label`
    says what gave the scores: "checker" or a judge / reward model's name) and ends with the
    label's verdict line ("Judgement: ..."), which the scorer `self_judge` reads."""
    out = []
    for g in groups:
        rs = [r for r in _graded(g["responses"]) if r.get("kind", "sample") == "sample"]
        good = [r for r in _ranked(rs) if r["score"] >= min_score
                and _usable(r, g["item"], require_format, allow_truncated)]
        if not good:
            continue
        # A stable sort: the ranking is kept among answers with (and without) a wrong step.
        best = sorted(good, key=lambda r: any(not s["right"] for s in critique.calculation_steps(r["text"])))[0]
        for r in rs:
            ok = r in good
            fb = critique.template_critique(g["item"], r, ok, label=label, score=r["score"],
                                            min_score=min_score, reveal_reference=reveal_reference)
            out.append({"prompt": g["prompt"], "response": r["text"], "feedback": fb,
                        "refined": r["text"] if ok else best["text"], "correct": ok,
                        "id": g["item"]["id"]})
    return out


def with_meta_views(meta: Iterable[Mapping[str, Any]], qa: Iterable[Mapping[str, Any]]) -> list[dict]:
    """SELF's restart data for the `self_meta` objective: the meta-skill tuples with all three views
    (has_meta 1), then the (prompt, response) examples as direct answers only (has_meta 0: their
    feedback and refinement views are masked out of the loss, `losses.self_meta_loss`)."""
    out = [{**t, "has_meta": 1} for t in meta]
    out += [{**r, "feedback": "", "refined": r["response"], "has_meta": 0} for r in qa]
    return out


def own_data(records: Iterable[Mapping[str, Any]]) -> list[dict]:
    """The (prompt, response) examples of a round's SFT data without the meta-skill tuples that
    `with_meta_views` put in it (has_meta 1), in their plain form."""
    keep = ("prompt", "response", "id", "score", "topic", "messages", "system")
    return [{k: r[k] for k in keep if k in r} for r in records if r.get("has_meta", 0) != 1]


def dedupe(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """`records` without repeated (prompt, response) pairs, first occurrence kept."""
    seen, out = set(), []
    for r in records:
        key = (r["prompt"], r["response"])
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def _chat(g: Group) -> dict[str, Any]:
    """The item's chat messages or system turn, so training sees the context sampling saw."""
    return {k: g["item"][k] for k in ("messages", "system") if g["item"].get(k)}


def _topic(g: Group) -> dict[str, Any]:
    t = g["item"].get("topic")
    return {"topic": t} if t is not None else {}
