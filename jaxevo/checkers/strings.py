"""String answers: `exact`, `normalized` (SQuAD's normalisation: case, punctuation, articles,
whitespace) and `regex` (the gold ``answer`` is a pattern the stated answer must match in full).

The stated answer is the first marked one ("The answer is X", "Answer: X", "#### X",
``\\boxed{X}``), or, when there is no marker, the whole completion if it is a single line (a
short-answer task is often answered with just the answer). A gold ``answer`` may be a list of
accepted answers (aliases); any one counts.
"""

from __future__ import annotations

import functools
import re
import string
from typing import Any

from jaxevo.checkers.base import Checker, Record, register_checker
from jaxevo.checkers.spans import clean_span, first_answer
from jaxevo.errors import ConfigError

__all__ = ["stated_answer", "squad_normalize", "EXACT", "NORMALIZED", "REGEX"]


def stated_answer(text: str | None) -> str | None:
    """The first marked answer, else the whole completion when it is one non-empty line."""
    found = first_answer(text)
    if found is not None:
        return found or None
    if text and text.strip() and "\n" not in text.strip():
        return clean_span(text) or None
    return None


_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def squad_normalize(s: str) -> str:
    """SQuAD v1.1's answer normalisation: lower case, drop punctuation, drop the articles a/an/the,
    collapse whitespace (in that order, as the official evaluation script does)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES_RE.sub(" ", s)
    return " ".join(s.split())


def _golds(record: Record) -> list[str]:
    gold: Any = record.get("answer")
    if gold is None:
        return []
    return [str(g) for g in gold] if isinstance(gold, (list, tuple)) else [str(gold)]


def _exact(text: str | None, record: Record) -> float:
    pred = stated_answer(text)
    return float(pred is not None and any(pred == g.strip() for g in _golds(record)))


def _normalized(text: str | None, record: Record) -> float:
    pred = stated_answer(text)
    if pred is None:
        return 0.0
    p = squad_normalize(pred)
    return float(any(p == squad_normalize(g) for g in _golds(record)))


@functools.lru_cache(maxsize=1024)
def _compile(pattern: str) -> re.Pattern:
    return re.compile(pattern)


def _regex(text: str | None, record: Record) -> float:
    pred = stated_answer(text)
    if pred is None:
        return 0.0
    for pattern in _golds(record):
        try:
            compiled = _compile(pattern)
        except re.error as e:
            raise ConfigError(f"record {record.get('id')}: checker 'regex' cannot compile its "
                              f"answer {pattern!r} as a regular expression ({e})") from None
        if compiled.fullmatch(pred):
            return 1.0
    return 0.0


def _formatted(text: str | None, record: Record) -> bool:
    return stated_answer(text) is not None


EXACT = register_checker(Checker(
    "exact", lambda t, r: stated_answer(t), _exact, _formatted,
    description="the stated answer equals the gold string exactly (surrounding space and a final full stop aside)"))
NORMALIZED = register_checker(Checker(
    "normalized", lambda t, r: (lambda a: None if a is None else squad_normalize(a))(stated_answer(t)),
    _normalized, _formatted,
    description="equal after SQuAD normalisation (case, punctuation, articles, whitespace)"))
REGEX = register_checker(Checker(
    "regex", lambda t, r: stated_answer(t), _regex, _formatted,
    description="the stated answer fully matches the regular expression in the record's answer"))
