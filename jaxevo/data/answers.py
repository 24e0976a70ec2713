"""Final-answer extraction and comparison for verifiable tasks.

Why strict by default: in a PyTorch probe of one self-evolution round on SmolLM2-135M (DESIGN.md),
completions cut off before "The answer is N" fell back to "the last number in the text", which
was usually a number copied from the question. Majority votes then agreed on those copies and a
second label-free round trained the model to be confidently wrong. So only answers written in
one of the required formats count; the last-number fallback exists but must be asked for.

Strict formats (case-insensitive):
  ``The answer is N`` / ``The final answer is N`` / ``#### N`` / ``\\boxed{N}`` / ``Answer: N``.
N may carry a sign, thousands commas (``1,234``), decimals, a leading ``$``, a trailing ``%``,
markdown emphasis, a trailing period and a unit word (``42 apples``).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from jaxevo.data.constraints import count_sentences, count_words

__all__ = [
    "extract_answer",
    "normalize_number",
    "normalize_answer",
    "answers_match",
    "is_well_formatted",
    "follows_format",
    "check_probe",
]

# A number as people and models write it. Thousands groups must be exactly three digits, so
# "1,234" is one number while "1,2,3" is a list whose first element is 1.
# The look-behind keeps "10-3" from reading as 10 and -3, and "x2" from reading as 2; a sign
# counts only when written against the digits ("-3", not "5 - 3").
_NUM = r"(?<![A-Za-z0-9.])[-+\u2212]?\$?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)"
_NUM_RE = re.compile(_NUM)

# Emphasis / LaTeX-dollar wrappers a model may put around the number after a marker.
_WRAP = r"[\s*_`$\\(]*"
# "12 or 13", "12 to 13", "12-13": a hedge, not an answer. Rejecting it stops a model from
# scoring by listing candidates.
_HEDGE_RE = re.compile(r"\s*(?:or|to|and|/|-|\u2013)\s*\$?\s*[-+]?\d", re.IGNORECASE)
# "The answer is 42 + 1 = 43", "The answer is 25 + 1 = N", "Answer: 25 plants / 5 plants = 5": the
# number starts an expression, so it is not the answer. Read as 42 and 25, such replies scored as
# right: 3 of the 12 samples the verifier accepted in one SELF meta round (docs/results.md). An
# operator (after an optional unit word, on the same line) followed by an operand makes the marker
# answer-less, as a hedge does.
_EXPRESSION_RE = re.compile(r"(?:[ \t]+[A-Za-z]+)?[ \t]*(?:[-+*/=^\u00d7\u00f7\u2212]|x|plus|minus|times|"
                            r"divided[ \t]+by|multiplied[ \t]+by)[ \t]*\(?[ \t]*\$?[ \t]*(?:[-+]?\d|[NnXx]\b)",
                            re.IGNORECASE)

_MARKERS = [
    re.compile(r"the\s+(?:final\s+)?answer\s+is\s*[:=]?" + _WRAP + r"(" + _NUM + r")", re.I),
    re.compile(r"####\s*" + _WRAP + r"(" + _NUM + r")"),
    re.compile(r"(?:^|(?<=[\s*>(]))(?:final\s+)?answer\s*[:=]" + _WRAP + r"(" + _NUM + r")", re.I),
]
# \boxed{...} holds exactly one number (with optional \$, \text{} noise stripped); anything
# else inside (a fraction, an expression) is not a strict integer/decimal answer.
_BOXED_RE = re.compile(r"\\boxed\s*\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}")
_BOXED_NOISE_RE = re.compile(r"\\text\{[^{}]*\}|\\[,;! ]|\\\$|\\%|[{}\s]")


def normalize_number(text: str) -> str | None:
    """Canonical string of one written number, or None if `text` is not a number.

    ``"1,234"`` -> ``"1234"``, ``"$5.00"`` -> ``"5"``, ``"3.50"`` -> ``"3.5"``, ``"-0"`` -> ``"0"``,
    ``"−7"`` (unicode minus) -> ``"-7"``. Trailing periods, ``%`` and surrounding spaces are ignored.
    """
    s = text.strip().replace("\u2212", "-").replace(" ", "")
    s = s.rstrip(".%").lstrip("$")
    sign = ""
    if s[:1] in ("+", "-"):
        sign, s = ("-" if s[0] == "-" else ""), s[1:]
    s = s.lstrip("$")
    if not re.fullmatch(r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+", s):
        return None
    try:
        value = Decimal(sign + s.replace(",", ""))
    except InvalidOperation:  # pragma: no cover - the regex already guarantees a number
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def _strict_candidates(text: str) -> list[tuple[int, str | None]]:
    """(position, canonical number or None for a hedged/non-numeric answer) per strict marker."""
    found: list[tuple[int, str | None]] = []
    for marker in _MARKERS:
        for m in marker.finditer(text):
            end = m.end(1)
            hedged = _HEDGE_RE.match(text, end) is not None or _EXPRESSION_RE.match(text, end) is not None
            found.append((m.start(), None if hedged else normalize_number(m.group(1))))
    for m in _BOXED_RE.finditer(text):
        inner = _BOXED_NOISE_RE.sub("", m.group(1))
        found.append((m.start(), normalize_number(inner)))
    # A boxed answer right after "The answer is" is one answer, found twice; sorting by position
    # and taking first/last handles that, as both give the same value.
    return sorted(found, key=lambda p: p[0])


def extract_answer(text: str | None, *, fallback: bool = False, which: str = "first") -> str | None:
    """The final answer of a completion as a canonical number string, or None.

    Args:
      text: the completion.
      fallback: also accept the last number anywhere in the text when no strict-format answer is
        present. Off by default: see the module docstring for why this is a trap.
      which: ``"first"`` (default) or ``"last"`` strict-format answer. Small models often keep
        generating new made-up problems after answering ("The answer is 7.\\n\\nQuestion: ...
        The answer is 10."), so the first answer is the one that belongs to the prompt; this also
        matches lm-evaluation-harness' GSM8K "strict-match". Use ``"last"`` for self-corrections.

    A strict marker whose number is hedged ("The answer is 12 or 13") or starts an expression ("The
    answer is 42 + 1 = 43") yields None for that marker.
    """
    if not text:
        return None
    if which not in ("first", "last"):
        raise ValueError(f"which must be 'first' or 'last', got {which!r}")
    candidates = _strict_candidates(text)
    if candidates:
        return candidates[0][1] if which == "first" else candidates[-1][1]
    if fallback:
        numbers = _NUM_RE.findall(text)
        for raw in reversed(numbers):
            value = normalize_number(raw)
            if value is not None:
                return value
    return None


def is_well_formatted(text: str | None) -> bool:
    """True when the completion states a final answer in a strict format (the format-only control)."""
    return extract_answer(text) is not None


# A dialogue probe asks "Answer in one short sentence." (jaxevo.data.dialogue_turns).
PROBE_MAX_WORDS = 25


def follows_format(text: str | None, item=None) -> bool:
    """Does the completion have the shape its item asks for? Dialogue memory probes
    (``item["kind"] == "probe"``) ask for one short sentence (at most `PROBE_MAX_WORDS` words);
    everything else for a final answer in a strict format (`is_well_formatted`).

    Why per item: a probe's reply ("Your dog is called Rex.") never states "The answer is N", so a
    format test for arithmetic alone dropped every probe answer from SFT data and from the
    format-only control, whatever its score."""
    if item is not None and item.get("kind") == "probe":
        return bool(text and text.strip()) and count_sentences(text) == 1 and count_words(text) <= PROBE_MAX_WORDS
    return is_well_formatted(text)


def normalize_answer(answer: object) -> str:
    """Canonical form of a gold or predicted answer: numbers via `normalize_number`, other
    strings lower-cased with surrounding whitespace and final punctuation removed."""
    if isinstance(answer, bool):  # bool is an int subclass; "True" is not the number 1 here
        return str(answer).lower()
    if isinstance(answer, int):
        return str(answer)
    if isinstance(answer, float):
        return normalize_number(repr(answer)) or str(answer)
    s = str(answer).strip()
    number = normalize_number(s)
    if number is not None:
        return number
    return re.sub(r"[\s.!?]+$", "", s).strip().lower()


def answers_match(pred: object, gold: object) -> bool:
    """Exact match after normalisation: ``answers_match("3.50", "3.5")`` and
    ``answers_match("$1,000", 1000)`` are True; None (no answer) never matches."""
    if pred is None or gold is None:
        return False
    return normalize_answer(pred) == normalize_answer(gold)


def _contains_word(text: str, word: str) -> bool:
    return re.search(r"(?<!\w)" + re.escape(word) + r"(?!\w)", text, re.IGNORECASE) is not None


def check_probe(answer: str | None, gold: str, distractors: list[str] | tuple[str, ...] = ()) -> bool:
    """Does a free-text reply to a dialogue probe ("What is my dog's name?") state the gold fact?

    The gold value must appear as a whole word (so "Rex" does not match "Rexford"); numeric golds
    are compared as numbers written in digits ("4" matches "4" and "4.0", not "14"). If any
    distractor (an outdated or competing value, e.g. the dog's old name) also appears, the reply
    hedges between candidates and does not count.
    """
    if not answer:
        return False
    numbers = {normalize_number(n) for n in _NUM_RE.findall(answer)}

    def mentions(value: object) -> bool:
        as_number = normalize_number(str(value))
        return as_number in numbers if as_number is not None else _contains_word(answer, str(value))

    return mentions(gold) and not any(mentions(d) for d in distractors)
