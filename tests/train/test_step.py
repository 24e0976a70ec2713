"""The one train step: accumulation invariance, learning, NaN guard (tiny random models)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxevo.train.config import OptimSection
from jaxevo.train.step import finalize_metrics
from tests.train.helpers import make_step, pref_records, sft_records

# eps=1e-3 keeps Adam's first update from amplifying round-off in near-zero gradient entries.
OPT = OptimSection(lr=1e-2, schedule="constant", clip_norm=None, eps=1e-3, weight_decay=0.01)


@pytest.mark.parametrize("objective,records", [("sft", sft_records(16)),
                                               ("preference", pref_records(8))])
def test_grad_accumulation_invariance(objective, records):
    """8 micro-batches of 1 == 1 micro-batch of 8: same metrics and the same updates. Compared at
    the second step: at the first the policy is the reference, so DPO's rewards are 0 up to
    round-off and its accuracy (chosen > rejected) would compare round-off."""
    out = {}
    for n in (1, 8):
        step, state, stream = make_step(objective, records, num_micro=n, optim=OPT)
        state, _ = step(state, stream.batch(0))
        state, m = step(state, stream.batch(1))
        out[n] = (jax.device_get(state.params), finalize_metrics(jax.device_get(m)))
    (p1, m1), (p8, m8) = out[1], out[8]
    for k in m1:
        np.testing.assert_allclose(m8[k], m1[k], rtol=1e-5, atol=1e-6, err_msg=k)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-5), p1, p8)
    assert m1["finite"] == 1.0 and m1["grad_norm"] > 0


def test_sft_learns_tiny_task():
    step, state, stream = make_step("sft", sft_records(8), num_micro=2,
                                    optim=OptimSection(lr=1e-2, schedule="constant"))
    losses = []
    for i in range(150):
        state, m = step(state, stream.batch(i))
        losses.append(float(m["loss"]))
    assert losses[0] > 3.0 and min(losses[-5:]) < 0.05, losses[::10]


def test_dpo_raises_accuracy_and_margin():
    step, state, stream = make_step("preference", pref_records(8), batch_size=8,
                                    optim=OptimSection(lr=3e-3, schedule="constant"),
                                    objective_kw={"beta": 0.1})
    hist = []
    for i in range(30):
        state, m = step(state, stream.batch(i))
        hist.append(finalize_metrics(jax.device_get(m)))
    # step 1: policy == reference, so rewards are round-off (the accuracy of ties is noise)
    assert abs(hist[0]["rewards/margins"]) < 1e-4 and abs(hist[0]["rewards/chosen"]) < 1e-4
    assert hist[0]["loss"] == pytest.approx(np.log(2), abs=1e-4)  # policy == reference at step 1
    assert hist[-1]["rewards/accuracies"] == 1.0 and hist[-1]["rewards/margins"] > 1.0
    assert hist[-1]["loss"] < 0.3
    for k in ("rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected"):
        assert np.isfinite(hist[-1][k])


def test_non_finite_update_is_skipped():
    step, state, stream = make_step("sft", sft_records(8), optim=OptimSection(lr=1e30, schedule="constant",
                                                                            clip_norm=None))
    before = jax.device_get(state.params)
    state, m = step(state, stream.batch(0))
    assert float(m["finite"]) == 0.0
    assert int(state.step) == 0  # not advanced
    jax.tree.map(np.testing.assert_array_equal, before, jax.device_get(state.params))
