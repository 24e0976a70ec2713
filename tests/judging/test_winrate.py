"""Win-rate statistics against hand-computed values, a direct bootstrap and scipy's optimiser;
AlpacaEval-format files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.optimize import minimize

from jaxevo.errors import ConfigError
from jaxevo.judging.alpaca import pair_outputs, read_outputs, write_outputs
from jaxevo.judging.winrate import (bootstrap_interval, length_controlled_win_rate, length_features,
                                    win_rate, win_rate_report)


def test_win_rate_ties_half_and_unjudged_left_out():
    prefs = [1.0, 0.0, 0.5, 1.0, None]
    assert win_rate(prefs) == pytest.approx(100 * 2.5 / 4)  # (1 + 0 + 0.5 + 1) / 4 judged
    r = win_rate_report(prefs, ["aa", "b", "ccc", "d", "eeeee"], ["x", "yy", "z", "w", "v"], n_boot=50)
    assert (r["n_wins"], r["n_wins_base"], r["n_draws"], r["n_total"], r["n_unjudged"]) == (2, 1, 1, 4, 1)
    assert r["avg_length"] == pytest.approx(12 / 5) and r["avg_length_baseline"] == pytest.approx(6 / 5)


def test_bad_preference_is_refused():
    with pytest.raises(ConfigError, match="0.5"):
        win_rate([1.0, 0.7])


def test_bootstrap_two_prompts_hand_computed():
    # resampled means of [1, 0] are 0, 50, 100 with probabilities 1/4, 1/2, 1/4: the 2.5% and
    # 97.5% quantiles are 0 and 100
    assert bootstrap_interval([1.0, 0.0], n_boot=2000, seed=3) == (0.0, 100.0)
    assert bootstrap_interval([1.0, 1.0, 1.0], n_boot=100) == (100.0, 100.0)


def test_bootstrap_fixed_seed_equals_direct_loop():
    prefs = [1.0, 0.0, 0.5, 1.0, 1.0, 0.0, 0.5, 1.0, 0.0, 1.0, 1.0]
    rng = np.random.default_rng(7)
    means = []
    for _ in range(500):  # one resample at a time: the same stream as the vectorised draw
        means.append(100 * np.mean([prefs[i] for i in rng.integers(0, len(prefs), size=len(prefs))]))
    lo, hi = bootstrap_interval(prefs, n_boot=500, seed=7)
    assert (lo, hi) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])), abs=1e-12)


def test_bootstrap_matches_normal_interval_on_many_prompts():
    prefs = [1.0] * 240 + [0.0] * 160  # p = 0.6, n = 400: se = sqrt(.24 / 400) = 2.449 points
    lo, hi = bootstrap_interval(prefs, n_boot=4000, seed=0)
    assert lo == pytest.approx(60 - 1.96 * 2.449, abs=0.6) and hi == pytest.approx(60 + 1.96 * 2.449, abs=0.6)


def test_lc_when_length_alone_explains_wins_is_half():
    # 80 prompts where the model is longer, 20 where it is shorter, same gap. Among the longer the
    # model wins 3 in 4, among the shorter 1 in 4 (with ties): the log-odds are +-logit(.75), so
    # the GLM's intercept is 0 and the LC win rate 50% while the raw win rate is 65%.
    prefs = [1.0] * 58 + [0.5] * 4 + [0.0] * 18 + [1.0] * 4 + [0.5] * 2 + [0.0] * 14
    model = [300] * 80 + [100] * 20
    base = [200] * 100
    assert win_rate(prefs) == pytest.approx(100 * (58 + 2 + 4 + 1) / 100)
    assert length_controlled_win_rate(prefs, model, base) == pytest.approx(50.0, abs=1e-3)


def test_lc_separable_by_length_is_not_identified():
    # The model wins exactly when longer (75 prompts) and loses when shorter (25). Exact separation
    # leaves the GLM unidentified: as the ridge vanishes the slope diverges and the intercept tends
    # to ln(75/25)/2 (the stationarity condition 75 e^-(b0+c) = 25 e^(b0-c)), so the LC win rate
    # tends to 100 sigmoid(ln(3)/2) = 63.40, between 50 and the raw 75.
    prefs = [1.0] * 75 + [0.0] * 25
    model, base = [300] * 75 + [100] * 25, [200] * 100
    lcs = [length_controlled_win_rate(prefs, model, base, l2=l2) for l2 in (1e-2, 1e-4, 1e-8)]
    limit = 100 * np.sqrt(3) / (1 + np.sqrt(3))
    assert lcs == pytest.approx([limit] * 3, abs=0.02)
    assert win_rate(prefs) == 75.0


def test_lc_without_length_difference_is_raw_win_rate():
    prefs = [1.0, 1.0, 0.0, 0.5, 1.0]
    assert length_controlled_win_rate(prefs, [5] * 5, [9] * 5) == pytest.approx(win_rate(prefs), abs=1e-6)


def test_lc_fit_matches_scipy():
    rng = np.random.default_rng(0)
    n = 60
    model, base = rng.integers(50, 900, n), rng.integers(50, 900, n)
    prefs = list(rng.choice([0.0, 0.5, 1.0], n, p=[0.4, 0.2, 0.4]))
    x = np.stack([length_features(model, base), np.ones(n)], 1)
    y = np.asarray(prefs)
    assert x[:, 0] == pytest.approx(np.tanh((base - model) / np.std(base - model, ddof=1)))

    def loss(w):  # soft-label cross-entropy + the same ridge (length term only)
        z = x @ w
        return np.sum(np.logaddexp(0, z) - y * z) + 1e-4 / 2 * w[0] ** 2
    w = minimize(loss, np.zeros(2), method="BFGS", options={"gtol": 1e-10}).x
    assert length_controlled_win_rate(prefs, model, base) == pytest.approx(100 / (1 + np.exp(-w[1])), abs=1e-4)


def test_lc_unjudged_left_out():
    prefs = [1.0, 0.0, None, 1.0, 0.5, 0.0, 1.0]
    m, b = [10, 40, 99, 30, 20, 50, 35], [20, 20, 1, 25, 20, 30, 30]
    keep = [i for i, p in enumerate(prefs) if p is not None]
    assert length_controlled_win_rate(prefs, m, b) == pytest.approx(
        length_controlled_win_rate([prefs[i] for i in keep], [m[i] for i in keep], [b[i] for i in keep]))


def test_alpaca_outputs_roundtrip_and_pairing(tmp_path):
    rows = [{"instruction": "Say hi", "output": "Hi!", "generator": "round1"},
            {"instruction": "Name a fruit", "output": "Apple.", "generator": "round1", "dataset": "x"}]
    write_outputs(tmp_path / "m.json", rows)
    assert json.loads((tmp_path / "m.json").read_text()) == rows
    assert read_outputs(tmp_path / "m.json") == rows
    (tmp_path / "b.jsonl").write_text("".join(json.dumps({"instruction": r["instruction"], "output": "ok"}) + "\n"
                                              for r in reversed(rows)))
    base = read_outputs(tmp_path / "b.jsonl")
    assert base[0]["generator"] == "b"  # defaults to the file's stem
    assert [(m["output"], b["output"]) for m, b in pair_outputs(rows, base)] == [("Hi!", "ok"), ("Apple.", "ok")]
    with pytest.raises(ConfigError, match="no baseline output"):
        pair_outputs(rows, base[:1])


def test_alpaca_bad_records_name_file_and_line(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c"}\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:2: needs string field\(s\) \['output'\]"):
        read_outputs(tmp_path / "bad.jsonl")
    (tmp_path / "bad.json").write_text('[{"output": "b"}]')
    with pytest.raises(ConfigError, match="bad.json: record 0"):
        read_outputs(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="no such outputs file"):
        read_outputs(tmp_path / "none.json")


def test_lc_win_rate_when_every_prompt_has_the_same_outcome():
    """All lost (or all won, all tied): the LC win rate is that rate, not a failed fit (the
    Newton step's Hessian is singular there)."""
    from jaxevo.judging.winrate import length_controlled_win_rate

    for p, want in ((0.0, 0.0), (1.0, 100.0), (0.5, 50.0)):
        assert length_controlled_win_rate([p, p, p], [10, 30, 20], [25, 5, 20]) == want
