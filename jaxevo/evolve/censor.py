"""DPSE's Censor: interaction signals read from the logged texts -> a satisfaction score per answer.

METHODS.md §4.2 [I]: for every answer the Censor reads the user's reaction — explicit rating or
thumb, sentiment, whether they continue, rephrase / re-ask, correct the assistant, stay engaged —
plus an optional quality signal (a verifier, the model's own judgement, self-consistency) and
combines the signals present:

    S = sum_k w_k s_k / sum_k w_k,   s_k in [0, 1]

The signals come from texts only (`censor_signals.text_signals`): the next user turn of the
interaction log for a logged answer (`reaction`, added by the `logged` stage), and for a fresh
sample the next user turn the simulated user writes (`jaxevo.data.user_sim`, for items with the
simulator's labels; it is one producer of log turns, and the Censor never reads its internal
quality class). An answer nobody reacted to has only the quality signal; with `quality: none` it
scores None (never accepted nor paired). The Censor also gives the topic statistics the two DPSE
expansions use: topic frequency (frequency-aware preference weights) and mean satisfaction per
topic (topic-aware expansion).
"""

from __future__ import annotations

import collections
import random
from typing import Any, Callable, Iterable, Mapping, Sequence

from jaxevo.checkers import checker_for
from jaxevo.data.records import stable_hash
from jaxevo.data.user_sim import simulate_user_reaction
from jaxevo.errors import ConfigError
from jaxevo.evolve import verdict
from jaxevo.evolve.censor_signals import logged_signals
from jaxevo.evolve.config import CensorSection
from jaxevo.losses import frequency_weights
from jaxevo.plugins import check_signature
from jaxevo.registry import Registry

SIGNALS = ("explicit", "sentiment", "continuation", "rephrase", "correction", "engagement", "quality")
_SIMULATED = ("kind", "question")  # labels the simulated user needs to react to a fresh answer

# `censor.quality`: what fills the `quality` signal, (item, answer text, feedback) -> [0, 1] or
# None (no opinion). "none" leaves the signal out; "self_consistency" (the share of the group
# stating the same answer) is computed over the group, not registered here.
Quality = Callable[[Mapping[str, Any], str, "str | None"], float]
def _plain_quality(fn: object, ref: str, where: str) -> Quality:
    check_signature(fn, ("item", "text", "feedback"), where)
    return fn  # type: ignore[return-value]


QUALITY: Registry[Quality] = Registry("censor.quality", adapt=_plain_quality)


@QUALITY.register("verifier")
def verified_quality(item: Mapping[str, Any], text: str, feedback: str | None) -> float | None:
    """The item's checker against its gold answer (1 right, else 0): the verifier as a signal;
    None (no signal) for an item without a gold answer, e.g. a generated prompt."""
    if item.get("answer") in (None, ""):
        return None
    return float(checker_for(item).check(text, item) or 0.0)


@QUALITY.register("self_judge")
def self_judged_quality(item: Mapping[str, Any], text: str, feedback: str | None) -> float:
    """The verdict of the answer's feedback; 0.5 when it states none."""
    v = verdict.parse_verdict(feedback)
    return 0.5 if v is None else v


def simulated_reaction(item: Mapping[str, Any], text: str, seed: int, rating_prob: float) -> dict | None:
    """The next user turn the simulated user writes after `text` (None when the item has no
    simulator labels, e.g. a real log's turn or a generated prompt): its reaction, then the next
    question it would ask (``followup``) unless it abandoned; a rating with prob. `rating_prob`."""
    if any(item.get(k) is None for k in _SIMULATED) or item["kind"] not in ("question", "probe", "fact", "update"):
        return None
    step = {**item, "prompt": item["question"]}
    r = random.Random(int(stable_hash("censor-sim", seed, item.get("id"), text)[:16], 16))
    sim = simulate_user_reaction(step, text, r)
    follow = item.get("followup")
    next_user = sim["text"] if sim["abandon"] or not follow else f"{sim['text']} {follow}"
    return {"next_user": next_user, "rating": sim["rating"] if r.random() < rating_prob else None, "thumb": None}


def signals_for(item: Mapping[str, Any], response: Mapping[str, Any], quality: str, seed: int = 0,
                rating_prob: float = 0.0, engagement_words: int = 8,
                group_quality: float | None = None) -> dict[str, float]:
    """The Censor's signal vector for one response (each in [0, 1], higher = more satisfied):
    its logged reaction's text signals, else the simulated user's, plus `quality`."""
    text = response["text"]
    reaction = response.get("reaction") or simulated_reaction(item, text, seed, rating_prob)
    s: dict[str, float] = {}
    if reaction is not None:
        s = logged_signals(item, {"text": text, "reaction": reaction}, engagement_words)
    if quality == "self_consistency":
        if group_quality is not None:
            s["quality"] = group_quality
    elif quality != "none":
        q = QUALITY.get(quality, "censor.quality")(item, text, response.get("feedback"))
        if q is not None:  # None: the signal has no opinion on this answer
            s["quality"] = float(q)
    return s


def satisfaction(signals: Mapping[str, float], weights: Mapping[str, float]) -> float | None:
    """S over the signals present (weights renormalised); None when no weighted signal is present."""
    unknown = set(weights) - set(SIGNALS)
    if unknown:
        raise ConfigError(f"censor.weights has unknown signals {sorted(unknown)}; known: {SIGNALS}")
    if not any(w > 0 for w in weights.values()):
        raise ConfigError("censor.weights: no positive weight")
    used = {k: w for k, w in weights.items() if k in signals and w > 0}
    total = sum(used.values())
    if total <= 0:
        return None
    return sum(w * float(signals[k]) for k, w in used.items()) / total


def _consistency(group: Mapping[str, Any]) -> list[float | None]:
    """Self-consistency of each response: the share of the group stating the same answer."""
    item = group["item"]
    checker = checker_for(item)
    answers = [checker.extract(r["text"], item) for r in group["responses"]]
    votes = collections.Counter(a for a in answers if a is not None)
    return [votes[a] / len(answers) if a is not None else 0.0 for a in answers]


def satisfaction_scores(group: Mapping[str, Any], params: Mapping[str, Any]) -> list[float | None]:
    """Scorer `censor`: S for every response of a group (params: weights, quality, seed,
    rating_prob, engagement_words); the signals are kept in each response's ``signals``."""
    weights = params.get("weights") or CensorSection().weights
    quality = params.get("quality", "none")
    if quality == "none":
        weights = {k: w for k, w in weights.items() if k != "quality"}
    consistency = _consistency(group) if quality == "self_consistency" else None
    out = []
    for i, r in enumerate(group["responses"]):
        sig = signals_for(group["item"], r, quality, seed=int(params.get("seed", 0)) * 1000003 + i,
                          rating_prob=float(params.get("rating_prob", 0.0)),
                          engagement_words=int(params.get("engagement_words", 8)),
                          group_quality=consistency[i] if consistency else None)
        r["signals"] = sig  # kept in scored.jsonl for the report and for debugging
        out.append(satisfaction(sig, weights))
    return out


def topic_stats(groups: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """topic -> {"count", "freq", "mean_s"} over all scored responses."""
    counts: collections.Counter = collections.Counter()
    sums: collections.Counter = collections.Counter()
    for g in groups:
        t = g["item"].get("topic") or "none"
        for r in g["responses"]:
            if r.get("score") is None:  # nobody reacted and no quality signal: no evidence
                continue
            counts[t] += 1
            sums[t] += r["score"]
    n = sum(counts.values()) or 1
    return {t: {"count": c, "freq": c / n, "mean_s": sums[t] / c} for t, c in counts.items()}


def worst_topics(stats: Mapping[str, Mapping[str, float]], k: int) -> list[str]:
    """Topic-aware expansion targets: the k topics users are least satisfied with, weighted by
    how often they come up (a frequent topic that goes badly matters most)."""
    return sorted(stats, key=lambda t: (1 - stats[t]["mean_s"]) * stats[t]["freq"], reverse=True)[:k]


def pair_weights(topics: Sequence[str | None], alpha: float) -> list[float]:
    """Frequency-aware PO weights w(x) ∝ f_topic^alpha, mean 1, over the whole preference set."""
    if not topics:
        return []
    names = sorted({t or "none" for t in topics})
    ids = [names.index(t or "none") for t in topics]
    return [float(w) for w in frequency_weights(ids, alpha, num_topics=len(names))]
