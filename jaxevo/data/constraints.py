"""Checkers for verifiable format constraints (IFEval-style) on instruction responses.

A constraint is a dict ``{"type": ..., **params}``; `CONSTRAINT_CHECKERS` maps each type to a
pure function ``(text, constraint) -> bool``. Supported types:

=================  ================================================  ===============================
type               params                                            passes when
=================  ================================================  ===============================
word_count         min and/or max                                    min <= #words <= max
sentence_count     min and/or max                                    min <= #sentences <= max
bullet_count       exact                                             exactly that many bullet lines
paragraph_count    exact                                             blank-line separated blocks
keywords           words (list)                                      each word appears (whole word)
forbidden_words    words (list)                                      none appears
json               keys (optional list)                              the text is one JSON object
lowercase          -                                                 no upper-case letter
no_commas          -                                                 no comma
ends_with          text                                              last non-space chars == text
starts_with        text                                              first non-space chars == text
=================  ================================================  ===============================
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Mapping, Sequence

from jaxevo.errors import ConfigError

__all__ = ["CONSTRAINT_CHECKERS", "check_constraint", "check_constraints", "constraint_score",
           "count_words", "count_sentences", "count_bullets"]

Constraint = Mapping[str, Any]

_WORD_RE = re.compile(r"[A-Za-z0-9]+(?:['\u2019-][A-Za-z0-9]+)*")
_BULLET_RE = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+\S", re.M)
# A sentence ends at . ! ? (runs of them count once) followed by space or end. Abbreviations
# like "e.g." over-count; acceptable for a checker whose limits are loose ranges.
_SENTENCE_END_RE = re.compile(r"[.!?]+(?=\s|$)")
_FENCE_RE = re.compile(r"^```(?:json)?\s*\n?(.*?)\n?```$", re.S | re.I)


def count_words(text: str) -> int:
    return len(_WORD_RE.findall(text))


def count_sentences(text: str) -> int:
    text = _BULLET_RE.sub(" ", text)  # a bullet marker is not a sentence
    pieces = [p for p in _SENTENCE_END_RE.split(text) if _WORD_RE.search(p)]
    return len(pieces)


def count_bullets(text: str) -> int:
    return len(_BULLET_RE.findall(text))


def _in_range(value: int, c: Constraint) -> bool:
    return c.get("min", 0) <= value <= c.get("max", float("inf"))


def _has_word(text: str, word: str) -> bool:
    return re.search(r"(?<!\w)" + re.escape(word) + r"(?!\w)", text, re.I) is not None


def _json_object(text: str, c: Constraint) -> bool:
    body = text.strip()
    fenced = _FENCE_RE.match(body)
    if fenced:  # a ```json fence around the object is the usual way models answer
        body = fenced.group(1).strip()
    try:
        value = json.loads(body)
    except (json.JSONDecodeError, ValueError):
        return False
    return isinstance(value, dict) and all(k in value for k in c.get("keys", ()))


def _paragraphs(text: str) -> int:
    return len([p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()])


CONSTRAINT_CHECKERS: dict[str, Callable[[str, Constraint], bool]] = {
    "word_count": lambda t, c: _in_range(count_words(t), c),
    "sentence_count": lambda t, c: _in_range(count_sentences(t), c),
    "bullet_count": lambda t, c: count_bullets(t) == c["exact"],
    "paragraph_count": lambda t, c: _paragraphs(t) == c["exact"],
    "keywords": lambda t, c: all(_has_word(t, w) for w in c["words"]),
    "forbidden_words": lambda t, c: not any(_has_word(t, w) for w in c["words"]),
    "json": _json_object,
    "lowercase": lambda t, c: t == t.lower(),
    "no_commas": lambda t, c: "," not in t,
    "ends_with": lambda t, c: t.rstrip().endswith(c["text"]),
    "starts_with": lambda t, c: t.lstrip().startswith(c["text"]),
}


def check_constraint(text: str | None, constraint: Constraint) -> bool:
    """Whether `text` satisfies one constraint. An empty or missing response satisfies nothing
    (otherwise "" would pass lowercase, no_commas and forbidden_words for free)."""
    kind = constraint.get("type")
    checker = CONSTRAINT_CHECKERS.get(kind)
    if checker is None:
        raise ConfigError(f"unknown constraint type {kind!r}; known: {', '.join(sorted(CONSTRAINT_CHECKERS))}")
    if not text or not text.strip():
        return False
    try:
        return bool(checker(text, constraint))
    except KeyError as e:
        raise ConfigError(f"constraint {dict(constraint)} lacks parameter {e.args[0]!r}") from None


def check_constraints(text: str | None, constraints: Sequence[Constraint]) -> list[bool]:
    """Per-constraint results, in order."""
    return [check_constraint(text, c) for c in constraints]


def constraint_score(text: str | None, constraints: Sequence[Constraint]) -> float:
    """Fraction of constraints satisfied (1.0 when there are none and the text is non-empty)."""
    if not constraints:
        return float(bool(text and text.strip()))
    results = check_constraints(text, constraints)
    return sum(results) / len(results)
