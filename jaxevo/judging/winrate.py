"""Win-rate statistics of a model against a baseline, one judged comparison per prompt.

    report = win_rate_report(prefs, model_outputs, baseline_outputs, n_boot=1000, seed=0)
    report["win_rate"], report["ci_low"], report["ci_high"], report["length_controlled_winrate"]

A preference is 1.0 (the model's answer won), 0.0 (the baseline's won), 0.5 (a tie) or None (the
judge gave no usable verdict: left out of every statistic and counted in `n_unjudged`). Rates are
percentages, the key names those of AlpacaEval's leaderboard (`win_rate`,
`length_controlled_winrate`, `n_wins`, `n_wins_base`, `n_draws`, `n_total`, `avg_length`).

The length-controlled win rate follows AlpacaEval 2 (Dubois et al. 2024, `alpaca_eval/metrics/
glm_winrate.py`): a logistic GLM predicts the preference from `tanh(delta_len / std(delta_len))`
(delta_len = baseline length - model length, in characters, std with ddof=1, not centred) plus an
intercept, fitted on the preferences as soft labels (a tie is 0.5); the LC win rate is the GLM's
prediction with the length difference set to 0, averaged over prompts. Of AlpacaEval's GLMs this
is `length_controlled_minimal`: its default `length_controlled_v1` adds an `instruction_difficulty`
term and a regularisation towards "gamed" baselines, both precomputed from many leaderboard
models' annotations of AlpacaEval's own 805 instructions, which do not exist for an arbitrary
instruction set. AlpacaEval picks an L1 strength by 5-fold CV; here a fixed tiny ridge (`l2`) on
the length coefficient only keeps the fit finite when length separates wins from losses exactly
(the GLM is not identified then: the LC win rate tends to sigmoid(ln(wins / losses) / 2)); the
intercept is not penalised, so without any length difference the LC win rate is the raw one.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from jaxevo.errors import ConfigError

Preference = float | None  # 1 model wins, 0 baseline wins, 0.5 tie, None not judged


def _judged(prefs: Sequence[Preference]) -> np.ndarray:
    """The mask [N] of prompts with a verdict; refuses values other than 0, 0.5, 1 and None."""
    bad = [p for p in prefs if p is not None and p not in (0.0, 0.5, 1.0)]
    if bad:
        raise ConfigError(f"a preference is 1 (model wins), 0 (baseline wins), 0.5 (tie) or None; got {bad[:3]}")
    return np.array([p is not None for p in prefs], bool)


def win_rate(prefs: Sequence[Preference]) -> float:
    """Share of judged prompts the model won, ties counted as half, in percent (nan if none)."""
    _judged(prefs)
    p = np.array([x for x in prefs if x is not None], float)
    return float(p.mean() * 100) if p.size else float("nan")


def bootstrap_interval(prefs: Sequence[Preference], n_boot: int = 1000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of `win_rate` over prompts, in percent.

    Draws `n_boot` resamples of the judged prompts with replacement (numpy `default_rng(seed)`,
    `integers(0, n, (n_boot, n))`), so a seed fixes the interval."""
    _judged(prefs)
    p = np.array([x for x in prefs if x is not None], float)
    if p.size == 0:
        return float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, p.size, size=(n_boot, p.size))
    means = p[idx].mean(axis=1) * 100
    tail = (1 - level) / 2
    lo, hi = np.quantile(means, [tail, 1 - tail])
    return float(lo), float(hi)


def _fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, iters: int = 200) -> np.ndarray:
    """Newton's method on sum_i CE(y_i, sigmoid(x_i . w)) + l2/2 |w[:-1]|^2; x [N, D] whose last
    column is the intercept (not penalised), y [N] in [0, 1] (soft labels) -> w [D]."""
    w = np.zeros(x.shape[1])
    ridge = np.full(x.shape[1], l2)
    ridge[-1] = 0.0
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(x @ w)))
        grad = x.T @ (p - y) + ridge * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(ridge)
        # lstsq, not solve: when the labels saturate (every prompt lost, say) the Hessian is singular
        step = np.linalg.lstsq(hess, grad, rcond=None)[0]
        w -= step
        if np.max(np.abs(step)) < 1e-12:
            break
    return w


def length_features(model_lengths: Sequence[float], baseline_lengths: Sequence[float]) -> np.ndarray:
    """AlpacaEval's length feature [N]: tanh((baseline - model length) / std), std with ddof=1;
    all zeros when every difference is equal (nothing to control for)."""
    delta = np.asarray(baseline_lengths, float) - np.asarray(model_lengths, float)
    std = delta.std(ddof=1) if delta.size > 1 else 0.0
    return np.tanh(delta / std) if std > 0 else np.zeros_like(delta)


def length_controlled_win_rate(prefs: Sequence[Preference], model_lengths: Sequence[float],
                               baseline_lengths: Sequence[float], l2: float = 1e-4) -> float:
    """AlpacaEval 2's LC win rate with the `length_controlled_minimal` GLM (see the module doc),
    in percent. prefs, model_lengths, baseline_lengths: [N] per prompt; unjudged prompts are left
    out (of the std too)."""
    if not len(prefs) == len(model_lengths) == len(baseline_lengths):
        raise ConfigError(f"{len(prefs)} preferences but {len(model_lengths)} model and "
                          f"{len(baseline_lengths)} baseline lengths")
    keep = _judged(prefs)
    if not keep.any():
        return float("nan")
    y = np.array([p for p in prefs if p is not None], float)
    if np.all(y == y[0]):  # all won, all lost or all tied: no length effect to separate out
        return float(100 * y[0])
    feat = length_features(np.asarray(model_lengths, float)[keep], np.asarray(baseline_lengths, float)[keep])
    w = _fit_logistic(np.stack([feat, np.ones_like(feat)], axis=1), y, l2)
    # the prediction at zero length difference is the same for every prompt (no instruction terms)
    return float(100 / (1 + np.exp(-w[1])))


def win_rate_report(prefs: Sequence[Preference], model_outputs: Sequence[str], baseline_outputs: Sequence[str],
                    n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Everything `jaxevo eval --judge` reports, from one preference per prompt and both answers
    (lengths in characters, as AlpacaEval counts them). Rates in percent."""
    if not len(prefs) == len(model_outputs) == len(baseline_outputs):
        raise ConfigError(f"{len(prefs)} preferences for {len(model_outputs)} model and "
                          f"{len(baseline_outputs)} baseline outputs")
    keep = _judged(prefs)
    m_len = [len(o) for o in model_outputs]
    b_len = [len(o) for o in baseline_outputs]
    lo, hi = bootstrap_interval(prefs, n_boot, seed, level)
    judged = [p for p in prefs if p is not None]
    return {
        "win_rate": win_rate(prefs), "ci_low": lo, "ci_high": hi, "ci_level": level,
        "length_controlled_winrate": length_controlled_win_rate(prefs, m_len, b_len),
        "n_wins": sum(p == 1.0 for p in judged), "n_wins_base": sum(p == 0.0 for p in judged),
        "n_draws": sum(p == 0.5 for p in judged), "n_total": len(judged),
        "n_unjudged": int((~keep).sum()),
        "avg_length": float(np.mean(m_len)) if m_len else float("nan"),
        "avg_length_baseline": float(np.mean(b_len)) if b_len else float("nan"),
    }
