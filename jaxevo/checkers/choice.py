"""`choice`: multiple choice. The record has ``choices`` (the option texts; their letters are
A, B, C... by position) and ``answer``: a letter, a 0-based index (an int or digits, as MMLU's
``answer`` column) or the option's text.

A completion states a letter the usual ways — "The answer is (B)", "Answer: b", "\\boxed{B}",
or a reply that starts with the letter ("B.", "(B) Paris", "B") — or names the option's text
after a marker ("The answer is Paris"). A letter outside the options is no answer. A hedge that
names two letters ("A or C", "B/C", "A and B") is no answer either, so a model cannot score by
listing candidates.
"""

from __future__ import annotations

import re
import string
from typing import Any, Sequence

from jaxevo.checkers.base import Checker, Record, register_checker
from jaxevo.checkers.spans import answer_spans
from jaxevo.checkers.strings import squad_normalize
from jaxevo.errors import ConfigError

__all__ = ["gold_letter", "stated_letter", "CHOICE"]

LETTERS = string.ascii_uppercase
# A letter token: "(B)", "B", "B.", "B)", "**B**". Upper case may be followed by words ("B because
# ..."); lower case only by punctuation or the end, or "a" the article would read as option A.
_UPPER_RE = re.compile(r"[*_\s]*\(?([A-Z])\)?(?![A-Za-z0-9])")
_LOWER_RE = re.compile(r"[*_\s]*\(?([a-z])\)?(?=[*_\s]*(?:[.):,;!]|$))")
# A hedge: "or", "and", "/", "&" or "vs", then (within a few words, same sentence) a second
# letter — "(C)", a capital "C", or "c" set off by punctuation. "B, a city" names one option.
_HEDGE_RE = re.compile(r"(?i:\bor\b|\band\b|\bvs\b|/|&)[^.\n]{0,20}?"
                       r"(?:\(([A-Za-z])\)|\b([A-Z])\b|\b([a-z])\b(?=\s*(?:[.):,;!]|$)))")
_LIST_RE = re.compile(r"[*_\s).:]*,\s*(?:\(([A-Za-z])\)|([A-Z])\b|([a-z])\b(?=\s*(?:[.):,;!]|$)))")  # "B, C"
# With no marker, a reply must open with the letter set off: "(B) ...", "B.", "B)", "B:", "B".
# "A car is..." opens with an article, not option A.
_OPENING_RE = re.compile(r"[*_\s]*(?:\(([A-Za-z])\)|([A-Za-z])(?=[*_]*(?:[.):]|\s*$)))")
_TEXT_RE = re.compile(r"\\text(?:bf)?\{([^{}]*)\}")


def _choices(record: Record) -> Sequence[Any]:
    choices = record.get("choices")
    if not isinstance(choices, (list, tuple)) or not choices:
        raise ConfigError(f"record {record.get('id')}: checker 'choice' needs 'choices' as a "
                          f"non-empty list of option texts, got {choices!r}")
    if len(choices) > len(LETTERS):
        raise ConfigError(f"record {record.get('id')}: at most {len(LETTERS)} choices, got {len(choices)}")
    return choices


def gold_letter(record: Record) -> str:
    """The letter of the correct option, from a letter, a 0-based index or the option's text."""
    choices = _choices(record)
    letters = LETTERS[: len(choices)]
    answer = record.get("answer")
    if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(choices):
        return letters[answer]
    s = str(answer).strip().strip("().").strip()
    if len(s) == 1 and s.upper() in letters and s.isalpha():
        return s.upper()
    if s.isdigit() and int(s) < len(choices):
        return letters[int(s)]
    for letter, option in zip(letters, choices):
        if squad_normalize(str(option)) == squad_normalize(str(answer)):
            return letter
    raise ConfigError(f"record {record.get('id')}: answer {answer!r} is not a letter A-{letters[-1]}, "
                      f"a 0-based index below {len(choices)} or the text of one of the choices")


def _letter_at_start(span: str, letters: str, opening: bool = False) -> str | None:
    """The letter a span starts with, None when it starts otherwise or hedges between two.
    `opening`: the span is a whole reply without a marker (the stricter `_OPENING_RE`)."""
    m = _OPENING_RE.match(span) if opening else (_UPPER_RE.match(span) or _LOWER_RE.match(span))
    letter = m and (m.group(1) or (m.group(2) if opening else None))
    if not letter or letter.upper() not in letters:
        return None
    rest = span[m.end():]
    line = rest[: rest.find("\n") if "\n" in rest else None]
    listed = _LIST_RE.match(line)
    for h in ([listed] if listed else []) + list(_HEDGE_RE.finditer(line)):
        other = next(g for g in h.groups() if g)
        if other.upper() in letters or h.group(1):
            return None
    return letter.upper()


def stated_letter(text: str | None, record: Record) -> str | None:
    """The letter a completion answers with (upper case), or None."""
    if not text or not text.strip():
        return None
    choices = _choices(record)
    letters = LETTERS[: len(choices)]
    spans = answer_spans(text)
    if spans:  # the first marked answer decides, as for the other checkers
        span = _TEXT_RE.sub(r"\1", spans[0][2]).strip()
        letter = _letter_at_start(span, letters)
        if letter is not None:
            return letter
        # "The answer is Paris": the option's own text (one option, not a hedge between two)
        said = squad_normalize(re.sub(r"^[*_\s]*(?:option|choice)\s+", "", span, flags=re.I))
        named = [lt for lt, opt in zip(letters, choices) if said and squad_normalize(str(opt)) == said]
        return named[0] if len(named) == 1 else None
    # No marker: a reply that opens with the letter ("B.", "(B) Paris", "B").
    return _letter_at_start(text.lstrip(), letters, opening=True)


CHOICE = register_checker(Checker(
    name="choice",
    extract=stated_letter,
    check=lambda text, record: float((p := stated_letter(text, record)) is not None and p == gold_letter(record)),
    well_formatted=lambda text, record: stated_letter(text, record) is not None,
    needs=("answer", "choices"),
    description="a letter among the record's choices (The answer is (B), B., Answer: b)",
), "multiple_choice")
