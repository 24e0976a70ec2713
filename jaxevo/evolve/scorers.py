"""Scorers: how a round decides which of its own responses are good. A registry of small functions.

A scorer sees one prompt's *group* — the item (prompt, gold answer if any, topic...) and all its
responses (samples and refinements, with feedback texts when a feedback stage ran) — and returns
one score in [0, 1] per response. Groups let self-consistency vote and let a Censor compare.

    verifier          programmatic check against the gold answer (environment feedback)
    format_only       1 if the response states an answer in the required format (the control)
    self_consistency  share of the group's formatted answers that agree with this one
    self_judge        the model's own feedback verdict ("Judgement: correct") — needs a feedback stage
    judge             same verdict parser over feedback written by another model (`score.judge_model`)
    censor            DPSE satisfaction from simulated-user interaction signals (see censor.py)

Only answers in the strict format count (DESIGN.md: the last-number fallback made votes agree on
numbers copied from the question).
"""

from __future__ import annotations

import collections
import re
from typing import Any, Callable, Mapping

from jaxevo.data.answers import answers_match, extract_answer, follows_format
from jaxevo.errors import ConfigError

Group = Mapping[str, Any]  # {"item": record, "responses": [{"text", "feedback"?, ...}]}
Scorer = Callable[[Group, Mapping[str, Any]], list[float]]
SCORERS: dict[str, Scorer] = {}

# "Judgement: correct" / "Judgement: incorrect" (SELF's feedback format) or "Score: 7/10".
_JUDGEMENT = re.compile(r"judge?ment\s*[:\-]\s*\**\s*(correct|incorrect|right|wrong)", re.I)
_SCORE = re.compile(r"score\s*[:\-]\s*(\d+(?:\.\d+)?)\s*/\s*(\d+)", re.I)


def register_scorer(name: str):
    def deco(fn: Scorer) -> Scorer:
        SCORERS[name] = fn
        return fn
    return deco


def get_scorer(name: str) -> Scorer:
    if name not in SCORERS:
        raise ConfigError(f"unknown scorer {name!r}; choose one of {sorted(SCORERS)}")
    return SCORERS[name]


@register_scorer("verifier")
def verifier(group: Group, params: Mapping[str, Any]) -> list[float]:
    gold = group["item"].get("answer")
    if gold is None:
        raise ConfigError(f"scorer 'verifier' needs a gold 'answer' on every prompt; "
                          f"{group['item'].get('id')} has none (use self_consistency or self_judge)")
    return [float(answers_match(extract_answer(r["text"]), gold)) for r in group["responses"]]


@register_scorer("format_only")
def format_only(group: Group, params: Mapping[str, Any]) -> list[float]:
    return [float(follows_format(r["text"], group["item"])) for r in group["responses"]]


@register_scorer("self_consistency")
def self_consistency(group: Group, params: Mapping[str, Any]) -> list[float]:
    answers = [extract_answer(r["text"]) for r in group["responses"]]
    votes = collections.Counter(a for a in answers if a is not None)
    total = len(answers)
    return [votes[a] / total if a is not None else 0.0 for a in answers]


def parse_verdict(feedback: str | None) -> float | None:
    """Feedback text -> 1.0 (correct), 0.0 (incorrect), a k/n score, or None when unparsable."""
    if not feedback:
        return None
    m = _JUDGEMENT.search(feedback)
    if m:
        return 1.0 if m.group(1).lower() in ("correct", "right") else 0.0
    m = _SCORE.search(feedback)
    if m and float(m.group(2)) > 0:
        return min(1.0, float(m.group(1)) / float(m.group(2)))
    return None


@register_scorer("self_judge")
def self_judge(group: Group, params: Mapping[str, Any]) -> list[float]:
    """The verdict of the response's own feedback; unparsable verdicts score `unparsed` (0)."""
    unparsed = float(params.get("unparsed", 0.0))
    out = []
    for r in group["responses"]:
        if "feedback" not in r:
            raise ConfigError("scorer 'self_judge' needs the feedback stage (feedback.enabled: true)")
        v = parse_verdict(r.get("feedback"))
        # An answer without the required format cannot be accepted, whatever the judge says.
        out.append(0.0 if not follows_format(r["text"], group["item"]) and params.get("require_format", True)
                   else (unparsed if v is None else v))
    return out


SCORERS["judge"] = self_judge  # same parser; the feedback stage used `score.judge_model`


@register_scorer("censor")
def censor(group: Group, params: Mapping[str, Any]) -> list[float]:
    from jaxevo.evolve.censor import satisfaction_scores

    return satisfaction_scores(group, params)
