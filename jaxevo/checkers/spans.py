"""Where a completion states its answer: the spans after "The answer is", "Answer:", "####" and
inside ``\\boxed{...}`` (braces balanced, so ``\\boxed{\\frac{1}{2}}`` is one span). Shared by the
checkers whose answers are not plain numbers (math, choice, strings)."""

from __future__ import annotations

import re

__all__ = ["boxed_spans", "marked_spans", "answer_spans", "first_answer", "clean_span"]

# "The answer is X", "The final answer is: X", "Answer: X", "Final answer = X", "#### X".
_MARKER_RE = re.compile(
    r"(?:the\s+(?:final\s+|correct\s+)?answer\s+is\s*[:=]?"
    r"|(?:^|(?<=[\s*>(]))(?:final\s+)?answer\s*[:=]"
    r"|####)[ \t]*", re.I | re.M)
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_NESTED_BOXED_RE = re.compile(r"^\s*\\(?:boxed|fbox)\s*\{(.*)\}\s*$", re.S)


def _balanced(text: str, start: int) -> int | None:
    """Index of the brace closing the one opened just before `start`, or None if unclosed."""
    depth = 1
    for i in range(start, len(text)):
        c = text[i]
        escaped = i > 0 and text[i - 1] == "\\"  # \{ and \} are literal braces (a set), not grouping
        if c == "{" and not escaped:
            depth += 1
        elif c == "}" and not escaped:
            depth -= 1
            if depth == 0:
                return i
    return None


def boxed_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, inner) of each top-level ``\\boxed{...}``; a ``\\boxed`` nested in another
    is unwrapped (``\\boxed{\\boxed{3}}`` -> ``3``). An unclosed box (a cut-off completion) is no
    answer."""
    out, pos = [], 0
    while True:
        m = _BOXED_RE.search(text, pos)
        if m is None:
            return out
        close = _balanced(text, m.end())
        if close is None:
            return out
        inner = text[m.end():close]
        while (nested := _NESTED_BOXED_RE.match(inner)) is not None:
            inner = nested.group(1)
        out.append((m.start(), close + 1, inner.strip()))
        pos = close + 1


def clean_span(span: str) -> str:
    """A marker's answer without the wrapping people and models add: markdown emphasis, quotes,
    ``$...$`` / ``\\(...\\)`` delimiters and a final full stop."""
    s = span.strip()
    for _ in range(3):  # wrappers nest: **"$x$"**
        before = s
        s = s.strip().strip("*_`\"'\u201c\u201d").strip()
        if s.startswith("\\(") and s.endswith("\\)"):
            s = s[2:-2]
        if s.startswith("\\[") and s.endswith("\\]"):
            s = s[2:-2]
        if len(s) >= 2 and s[0] == "$" and s[-1] == "$":
            s = s.strip("$")
        s = re.sub(r"[.!;,]+$", "", s.strip())
        if s == before:
            break
    return s.strip()


def marked_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, span) after each text marker; the span runs to the end of its line, or to
    the first sentence end (". " — not the point of a decimal) before that."""
    out = []
    for m in _MARKER_RE.finditer(text):
        line_end = text.find("\n", m.end())
        line_end = len(text) if line_end < 0 else line_end
        stop = re.search(r"[.!?](?=\s|$)", text[m.end():line_end])
        end = m.end() + stop.start() if stop else line_end
        if text[m.end():end].strip():
            out.append((m.start(), end, text[m.end():end]))
    return out


def answer_spans(text: str | None) -> list[tuple[int, int, str]]:
    """Every stated answer in order of position (boxed inner text raw, marker spans raw). A box
    right after a marker ("The answer is \\boxed{5}") is one answer: the box wins."""
    if not text:
        return []
    boxes = boxed_spans(text)
    spans = list(boxes)
    for s, e, span in marked_spans(text):
        if not any(s <= bs < e for bs, _, _ in boxes):
            spans.append((s, e, span))
    return sorted(spans)


def first_answer(text: str | None) -> str | None:
    """The first stated answer, cleaned (`clean_span`), or None. First, as for numbers: small
    models keep writing new problems after answering, and their later answers belong to those."""
    spans = answer_spans(text)
    return clean_span(spans[0][2]) if spans else None
