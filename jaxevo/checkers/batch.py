"""Scores for many (completion, record) pairs at once: `check_many`.

Checkers that wait on other processes (`Checker.concurrent`: code, whose every check is an
interpreter start-up and a test run) are checked from a thread pool; the rest run in the calling
thread, in order (math-verify's time limit needs the main thread, and they are CPU-bound).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from jaxevo.checkers.base import Checker, Record, checker_for, get_checker

__all__ = ["check_many"]


def check_many(texts: Sequence[str | None], records: Sequence[Record], checker: Checker | str | None = None,
               workers: int | None = None) -> list[float | None]:
    """``[check(texts[i], records[i])]``: by each record's checker, or by `checker` for all.
    `workers` (default: the CPU count) threads run the concurrent checkers' checks."""
    if len(texts) != len(records):
        raise ValueError(f"{len(texts)} texts for {len(records)} records")
    fixed = get_checker(checker) if isinstance(checker, str) else checker
    checkers = [fixed or checker_for(r) for r in records]
    out: list[float | None] = [None] * len(texts)
    pooled = [i for i, c in enumerate(checkers) if c.concurrent]
    for i, c in enumerate(checkers):
        if not c.concurrent:
            out[i] = c.check(texts[i], records[i])
    if pooled:
        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            for i, score in zip(pooled, pool.map(lambda i: checkers[i].check(texts[i], records[i]), pooled)):
                out[i] = score
    return out
