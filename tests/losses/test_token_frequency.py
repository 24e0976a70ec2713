"""DPSE's token-frequency weights against hand-computed values."""

import numpy as np
import pytest

from jaxevo.losses import preference_loss
from jaxevo.losses.token_frequency import count_tokens, token_frequency_weights, weighted_logps


def test_counts_skip_untrained_positions():
    labels = np.array([[1, 1, 2, -100], [3, 1, -100, -100]])
    np.testing.assert_array_equal(count_tokens(labels, 5), [0, 3, 1, 1, 0])


def test_weights_by_hand():
    # counts c = [0, 3, 1]; alpha = 1: raw = [-, 1/3, 1]; Σ c·raw = 3·1/3 + 1·1 = 2; Σ c = 4;
    # scale 2 -> ω = [1 (unseen), 2/3, 2]; mean over the 4 occurrences: (3·2/3 + 2) / 4 = 1.
    w = np.asarray(token_frequency_weights([0.0, 3.0, 1.0], alpha=1.0))
    np.testing.assert_allclose(w, [1.0, 2 / 3, 2.0], rtol=1e-6)
    # alpha = 0.5: raw = [-, 3^-0.5, 1]; Σ c·raw = √3 + 1; scale = 4 / (√3 + 1).
    w = np.asarray(token_frequency_weights([0.0, 3.0, 1.0], alpha=0.5))
    s = 4 / (np.sqrt(3) + 1)
    np.testing.assert_allclose(w, [1.0, s / np.sqrt(3), s], rtol=1e-6)
    np.testing.assert_allclose(token_frequency_weights([0.0, 3.0, 1.0], alpha=0.0), [1, 1, 1])


def test_weighted_logps_and_the_loss_on_them():
    omega = np.array([1.0, 2 / 3, 2.0])
    lp = np.array([[-0.5, -1.0, -2.0], [-1.5, -0.25, -9.0]])
    labels = np.array([[1, 2, 1], [2, 1, -100]])
    got = np.asarray(weighted_logps(lp, labels, omega))
    # Row 0: 2/3·(-0.5) + 2·(-1.0) + 2/3·(-2.0) = -1/3 - 2 - 4/3 = -11/3; row 1: 2·(-1.5) + 2/3·(-0.25).
    np.testing.assert_allclose(got, [-11 / 3, -3.0 - 1 / 6], rtol=1e-6)
    # fdpo on weighted sums (reference sums weighted the same way) = -log σ(β·(Δw_c - Δw_r)).
    ref = np.array([-3.0, -3.5])
    losses, _, _ = preference_loss("fdpo", got[:1], got[1:], ref[:1], ref[1:], beta=0.1)
    z = 0.1 * ((-11 / 3 + 3.0) - (-3.0 - 1 / 6 + 3.5))
    assert float(losses[0]) == pytest.approx(np.log1p(np.exp(-z)), rel=1e-6)
