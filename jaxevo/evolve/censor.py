"""DPSE's Censor: multi-dimensional interaction signals -> a satisfaction score per answer.

METHODS.md §4.2 [I]: for every answer the Censor reads the user's reaction — explicit rating,
sentiment, whether they continue, rephrase / re-ask, correct the assistant, stay engaged — plus an
optional quality signal (a verifier, or the model's own judgement) and combines them:

    S = sum_k w_k s_k / sum_k w_k,   s_k in [0, 1]

Here the reactions come from the simulated user of `jaxevo.data.user_sim` (deterministic given
the item and the answer); with real logs the same signals would be read from the next user turn.
The Censor also gives the topic statistics the two DPSE expansions use: topic frequency
(frequency-aware preference weights) and mean satisfaction per topic (topic-aware expansion).
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Iterable, Mapping, Sequence

from jaxevo.data.answers import answers_match, extract_answer
from jaxevo.data.user_sim import simulate_user_reaction
from jaxevo.errors import ConfigError
from jaxevo.evolve import verdict
from jaxevo.evolve.config import CensorSection
from jaxevo.losses import frequency_weights
from jaxevo.plugins import check_signature
from jaxevo.registry import Registry

SIGNALS = ("explicit", "sentiment", "continuation", "rephrase", "correction", "engagement", "quality")

# `censor.quality`: what fills the `quality` signal, (item, answer text, feedback) -> [0, 1].
# "none" leaves the signal out.
Quality = Callable[[Mapping[str, Any], str, "str | None"], float]
def _plain_quality(fn: object, ref: str, where: str) -> Quality:
    check_signature(fn, ("item", "text", "feedback"), where)
    return fn  # type: ignore[return-value]


QUALITY: Registry[Quality] = Registry("censor.quality", adapt=_plain_quality)


@QUALITY.register("verifier")
def verified_quality(item: Mapping[str, Any], text: str, feedback: str | None) -> float:
    """1 if the answer (any stated number, not only the strict format) matches the gold answer."""
    return float(answers_match(extract_answer(text, fallback=True), item.get("answer")))


@QUALITY.register("self_judge")
def self_judged_quality(item: Mapping[str, Any], text: str, feedback: str | None) -> float:
    """The verdict of the answer's feedback; 0.5 when it states none."""
    v = verdict.parse_verdict(feedback)
    return 0.5 if v is None else v


def signals_for(item: Mapping[str, Any], text: str, quality: str, feedback: str | None = None,
                seed: int = 0) -> dict[str, float]:
    """The Censor's signal vector for one answer (each in [0, 1], higher = more satisfied)."""
    reaction = simulate_user_reaction(item, text, seed)
    s = dict(reaction["signals"])
    if quality != "none":
        s["quality"] = QUALITY.get(quality, "censor.quality")(item, text, feedback)
    return s


def satisfaction(signals: Mapping[str, float], weights: Mapping[str, float]) -> float:
    unknown = set(weights) - set(SIGNALS)
    if unknown:
        raise ConfigError(f"censor.weights has unknown signals {sorted(unknown)}; known: {SIGNALS}")
    used = {k: w for k, w in weights.items() if k in signals and w > 0}
    total = sum(used.values())
    if total <= 0:
        raise ConfigError("censor.weights: no positive weight on an available signal")
    return sum(w * float(signals[k]) for k, w in used.items()) / total


def satisfaction_scores(group: Mapping[str, Any], params: Mapping[str, Any]) -> list[float]:
    """Scorer `censor`: S for every response of a group (params: weights, quality, seed)."""
    weights = params.get("weights") or CensorSection().weights
    quality = params.get("quality", "none")
    if quality == "none":
        weights = {k: w for k, w in weights.items() if k != "quality"}
    out = []
    for i, r in enumerate(group["responses"]):
        sig = signals_for(group["item"], r["text"], quality, r.get("feedback"),
                          seed=int(params.get("seed", 0)) * 1000003 + i)
        r_signals = r.setdefault("signals", {})
        r_signals.update(sig)  # kept in scored.jsonl for the report and for debugging
        out.append(satisfaction(sig, weights))
    return out


def topic_stats(groups: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """topic -> {"count", "freq", "mean_s"} over all scored responses."""
    counts: collections.Counter = collections.Counter()
    sums: collections.Counter = collections.Counter()
    for g in groups:
        t = g["item"].get("topic") or "none"
        for r in g["responses"]:
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
