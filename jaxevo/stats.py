"""Small statistics for accuracy figures, without jax: the Wilson interval of one accuracy and the
exact sign test of two models' paired results on the same items."""

from __future__ import annotations

import math


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (sane at 0% and 100%)."""
    if n == 0:
        return 0.0, 0.0
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test (McNemar's exact test) of paired results: the probability, if
    either model were as likely to be the one right on an item where they differ, of a split at
    least as uneven as `wins` against `losses`. Items both get right or wrong do not count."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1)) / 2 ** n
    return min(1.0, 2 * tail)
