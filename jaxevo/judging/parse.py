"""Reading a judge's verdict. Conservative by design: a text that does not state one clear verdict
gets None (no score), never a default one; a wrong grade is worse than none.

    parse_score("... Rating: [[7]]", 1, 10)   -> 7.0
    parse_score("7/10 but really 3")         -> None   (two grades)
    parse_choice("... [[B]]")                -> "B"
    combine_orders("A", "B")                 -> 1.0    (the first answer won in both orders)
"""

from __future__ import annotations

import re

_NUM = r"[-+]?\d+(?:\.\d+)?"
_STRICT_SCORE = re.compile(rf"\[\[\s*({_NUM})\s*\]\]")
_SCORE_WORD = re.compile(rf"\b(?:rating|score|grade)\b\s*(?:is|of)?\s*[:=\-]?\s*\**\s*{_NUM}", re.I)
_FRACTION = re.compile(rf"({_NUM})\s*(?:/|\bout of\b)\s*({_NUM})", re.I)
_NUMBER = re.compile(_NUM)

_STRICT_CHOICE = re.compile(r"\[\[\s*([ABC])\s*\]\]")
_LOOSE_CHOICE = re.compile(r"(?i:\b(?:final verdict|verdict|winner)\b)\s*(?i:is)?\s*[:\-]?\s*\**\s*"
                           r"(?i:(?:assistant|answer|response)\s*)?\(?\b([AB])\b(?![\w'])")
_BETTER = re.compile(r"(?i:\b(?:assistant|answer|response|output))\s*\(?\b([AB])\b\)?\s+(?i:is\s+(?:clearly\s+)?"
                     r"(?:better|superior|preferred|the better))")
_LOOSE_TIE = re.compile(r"\b(?:final verdict|verdict)\b\s*(?:is)?\s*[:\-]?\s*\**\s*(?:a\s+)?\b(?:tie|draw|\[?C\]?)\b", re.I)


def _in_range(v: float, low: float, high: float) -> float | None:
    return v if low <= v <= high else None


def parse_score(text: str | None, low: float = 1, high: float = 10) -> float | None:
    """The grade a judge's text states, on the scale [low, high], or None.

    1. `[[N]]` markers (the format the prompt asks for): all must give the same N.
    2. Else the last line naming a grade ("Rating: 7", "Score: 7/10", "7 out of 10"): every number
       on it, bar the denominators (which must equal `high`), must be the same N.
    A grade outside [low, high] is None, not clamped.
    """
    if not text:
        return None
    strict = {float(m) for m in _STRICT_SCORE.findall(text)}
    if strict:
        return _in_range(strict.pop(), low, high) if len(strict) == 1 else None
    line = next((ln for ln in reversed(text.splitlines()) if _SCORE_WORD.search(ln) or _FRACTION.search(ln)), None)
    if line is None:
        return None
    values = set()
    for m in _FRACTION.finditer(line):
        if float(m.group(2)) != high:
            return None  # "3/5" on a 1-10 scale: not this scale
        values.add(float(m.group(1)))
    values |= {float(n) for n in _NUMBER.findall(_FRACTION.sub(" ", line))}
    return _in_range(values.pop(), low, high) if len(values) == 1 else None


def parse_choice(text: str | None) -> str | None:
    """A pairwise verdict: "A", "B", "C" (a tie) or None. `[[A]]`-style markers must all agree;
    without them, "verdict: A" / "winner is B" / "Assistant A is better" / "verdict: tie"
    statements, all agreeing."""
    if not text:
        return None
    strict = set(_STRICT_CHOICE.findall(text))
    if not strict:
        strict = (set(_LOOSE_CHOICE.findall(text)) | set(_BETTER.findall(text))
                  | ({"C"} if _LOOSE_TIE.search(text) else set()))
    return strict.pop() if len(strict) == 1 else None


def combine_orders(first: str | None, second: str | None) -> float | None:
    """Preference for answer a from two verdicts: `first` with (a, b) shown as (A, B), `second`
    with them swapped. 1.0 / 0.0 only when both orders pick the same answer; any other pair of
    verdicts is a tie (0.5); None when either order gave no verdict."""
    if first is None or second is None:
        return None
    a_first = {"A": 1.0, "B": 0.0, "C": 0.5}[first]
    a_second = {"A": 0.0, "B": 1.0, "C": 0.5}[second]
    return a_first if a_first == a_second else 0.5
