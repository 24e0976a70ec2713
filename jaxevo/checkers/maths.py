"""`math`: symbolic answers (MATH-style: ``\\frac{1}{2}``, ``x^2+1``, intervals, ``\\sqrt{2}``),
compared by the `math-verify` package: ``\\frac{1}{2}`` = ``0.5`` = ``1/2``, units and ``\\text{}``
dropped, ``\\dfrac`` = ``\\frac``.

The stated answer is the first ``\\boxed{...}`` (braces balanced; a box inside a box unwrapped)
or the first "The answer is X" / "Answer: X" / "#### X"; only that span goes to math-verify.
Why not math-verify's own search of the whole text: it falls back to the last number anywhere,
which is the trap `jaxevo.data.answers` documents (votes agreeing on numbers copied from the
question). Two boxes joined by "or"/"and" are a hedge, not an answer.

The gold ``answer`` is a bare expression (``\\frac{1}{2}``, ``$\\frac{1}{2}$``) or a worked
solution containing ``\\boxed{}``.
"""

from __future__ import annotations

import functools
import re
import threading
from typing import Any

from jaxevo.checkers.base import Checker, Record, register_checker
from jaxevo.checkers.spans import answer_spans, clean_span
from jaxevo.errors import ConfigError

__all__ = ["stated_expression", "parse_answer", "parse_gold", "MATH"]

# math-verify's time limits work through SIGALRM, which only the main thread may set; elsewhere
# they are off (math-verify raises otherwise).
TIMEOUT_S = 5
_HEDGE_RE = re.compile(r"\s*\$?\s*(?:or|and|,|/)\s*\$?\s*\\(?:boxed|fbox)\s*\{", re.I)


def _mv():
    # Imported on first use: math-verify pulls in sympy (about a second), and most runs never
    # check a symbolic answer.
    import math_verify
    return math_verify


def _timeout() -> int | None:
    return TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


def _parse_latex(latex: str) -> list[Any]:
    mv = _mv()
    # The span is already the answer: box it so math-verify reads exactly this expression
    # (boxed_match_priority=0 puts the box first).
    return mv.parse("\\boxed{" + latex + "}",
                    extraction_config=[mv.LatexExtractionConfig(boxed_match_priority=0)],
                    fallback_mode="first_match", parsing_timeout=_timeout())


def stated_expression(text: str | None) -> str | None:
    """The raw LaTeX of the first stated answer (None if none, or if it hedges between boxes)."""
    spans = answer_spans(text)
    if not spans:
        return None
    start, end, span = spans[0]
    if text is not None and _HEDGE_RE.match(text, end):
        return None
    return clean_span(span) or None


@functools.lru_cache(maxsize=4096)
def parse_answer(latex: str) -> tuple[Any, ...]:
    """math-verify's parse of one answer expression: (sympy object, its string), or
    (its string,) when sympy cannot read it (a word answer: compared as a string), or ()."""
    return tuple(_parse_latex(latex))


@functools.lru_cache(maxsize=4096)
def parse_gold(gold: str) -> tuple[Any, ...]:
    """The gold answer parsed: a solution with a box is read by math-verify as a whole; a bare
    expression (with or without ``$...$``) is boxed first."""
    if "\\boxed" in gold or "\\fbox" in gold:
        mv = _mv()
        return tuple(mv.parse(gold, extraction_config=[mv.LatexExtractionConfig(boxed_match_priority=0)],
                              fallback_mode="first_match", parsing_timeout=_timeout()))
    return parse_answer(clean_span(gold))


def _parsed(text: str | None) -> tuple[Any, ...]:
    latex = stated_expression(text)
    return parse_answer(latex) if latex else ()


def _extract(text: str | None, record: Record) -> str | None:
    parsed = _parsed(text)
    return str(parsed[0]) if parsed else None


def _check(text: str | None, record: Record) -> float:
    gold = parse_gold(str(record["answer"]))
    if not gold:
        raise ConfigError(f"record {record.get('id')}: checker 'math' cannot read the gold answer "
                          f"{record['answer']!r} (an unclosed \\boxed{{}}?)")
    pred = _parsed(text)
    if not pred:
        return 0.0
    return float(_mv().verify(list(gold), list(pred), timeout_seconds=_timeout()))


MATH = register_checker(Checker(
    name="math",
    extract=_extract,
    check=_check,
    well_formatted=lambda text, record: bool(_parsed(text)),
    description="symbolic/LaTeX equivalence by math-verify (\\boxed{}, fractions, intervals, units dropped)",
))
