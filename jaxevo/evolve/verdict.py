"""The verdict a feedback text states: "Judgement: correct" / "Judgement: incorrect" (SELF's
feedback format) or "Score: 7/10". Read by the judge scorers, the Censor's self-judged quality
signal and SELF's refine-only-if-rejected rule."""

from __future__ import annotations

import re

_JUDGEMENT = re.compile(r"judge?ment\s*[:\-]\s*\**\s*(correct|incorrect|right|wrong)", re.I)
_SCORE = re.compile(r"score\s*[:\-]\s*(\d+(?:\.\d+)?)\s*/\s*(\d+)", re.I)


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
