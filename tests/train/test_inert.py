"""Micro-batches with no gradient (policy rows whose advantages are all 0, no KL term) skip their
forward and backward: the same update, loss and metrics as computing them, on a tiny random model."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import jax
import numpy as np
import pytest

from jaxevo.evolve.online import _batch
from jaxevo.sampling.params import Completion
from jaxevo.sharding import make_mesh
from jaxevo.train.builder import build_step
from jaxevo.train.config import ObjectiveSection, OptimSection, TrainConfig
from jaxevo.train.objectives import OBJECTIVES, get_objective, register_objective
from jaxevo.train.rollout import micro_order, rollout_batch, with_extras
from jaxevo.train.state import init_state
from jaxevo.train.step import fetch, finalize_metrics, to_global
from jaxevo.weights.load import load_pretrained

HP = {"epsilon_low": 0.2, "epsilon_high": 0.28, "max_completion_length": 9}


@pytest.fixture(scope="module")
def tiny_f32(tiny_model):
    return load_pretrained(tiny_model, dtype="float32", param_dtype="float32")


@pytest.fixture(scope="module")
def computed_policy():
    """`policy` without the skip: every micro-batch computed (the reference)."""
    register_objective(dataclasses.replace(get_objective("policy"), name="policy_computed", inert=None))
    yield "policy_computed"
    OBJECTIVES.remove("policy_computed")


def test_micro_order_gathers_rows_without_advantage_in_the_last_micro_batches():
    active = np.array([1, 1, 0, 0, 1, 0, 1, 0], bool)
    perm = micro_order(active, 2)  # micro-batch j = batch rows j, j + 2, j + 4, j + 6
    assert list(perm) == [0, 2, 1, 3, 4, 5, 6, 7]  # hand-placed: 0, 1, 4, 6 first, in order
    assert sorted(perm) == list(range(8))
    assert active[perm[0::2]].all() and not active[perm[1::2]].any()
    for same in (np.ones(8, bool), np.zeros(8, bool)):
        assert list(micro_order(same, 2)) == list(range(8))
    assert list(micro_order(active, 1)) == list(range(8))


def test_online_batch_puts_a_flat_group_in_the_last_micro_batch():
    """The online loop's batch: a flat group (advantage 0, no KL) fills the last micro-batch."""
    g = SimpleNamespace(advantage="grpo", group_size=2, scale_rewards="group", beta=0.0, share_prompt=1)
    ctx = SimpleNamespace(cfg=SimpleNamespace(grpo=g))
    comp = lambda t: Completion("x", tuple(t), np.zeros(len(t), np.float32), 0.0, "eos", 0, 0, 1)  # noqa: E731
    groups = [([1, 2], [comp([3]), comp([4, 5])], np.array([1.0, 0.0])),
              ([6, 7, 8], [comp([9]), comp([10])], np.array([1.0, 1.0])),  # flat
              ([11], [comp([12, 13]), comp([14])], np.array([0.0, 1.0]))]
    batch, _ = _batch(ctx, groups, pad_to_multiple=4, num_micro=3)
    adv = batch.extras["advantage"]
    assert np.all(adv[2::3] == 0) and np.all(adv[0::3] != 0) and np.all(adv[1::3] != 0)
    tokens = batch.views["completion"]["tokens"]
    assert list(tokens[2][:4]) == [6, 7, 8, 9] and list(tokens[5][:4]) == [6, 7, 8, 10]
    g.beta = 0.1  # a KL term: every row has a gradient, the rows stay in place
    batch, _ = _batch(ctx, groups, pad_to_multiple=4, num_micro=3)
    assert list(np.sign(batch.extras["advantage"])) == [1, -1, 0, 0, -1, 1]


def _policy_step(tiny_f32, objective, loss_type, num_micro, poison=False):
    """One step on 6 rollouts in micro-batches, the last 2 (or 4) rows with advantage 0."""
    rng = np.random.default_rng(0)
    prompts = [list(rng.integers(5, 1000, size=n)) for n in (3, 5, 4, 6, 2, 5)]
    comps = [list(rng.integers(5, 1000, size=n)) for n in (7, 2, 5, 4, 3, 6)]
    adv = np.array([1.2, -0.4, 0.3, -0.9, 0.0, 0.0] if num_micro == 3 else [1.2, -0.4, 0, 0, 0, 0], np.float32)
    order = micro_order(adv != 0, num_micro)
    batch = rollout_batch([prompts[i] for i in order], [comps[i] for i in order], adv[order], pad_to_multiple=8)
    if poison:  # an out-of-range token: the embedding gather gives NaN, so a forward there is NaN
        batch.views["completion"]["tokens"][adv[order] == 0, 1] = tiny_f32.cfg.vocab_size + 7
    mesh = make_mesh((1, -1, 1))
    tc = TrainConfig(batch_size=6, micro_batch_size=6 // num_micro,
                     optim=OptimSection(lr=1e-3, schedule="constant", clip_norm=None),
                     objective=ObjectiveSection(name=objective, loss_type=loss_type, beta=0.0, hparams=HP))
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tiny_f32.params)
    parts = build_step(tc, tiny_f32.cfg, mesh, abstract, 10)
    state = init_state(tiny_f32.params, parts.tx, 0, parts.state_shardings)
    # old log-probs away from the current ones: ratios get clipped, so the clip metrics' token
    # counts are checked too (μ > 1 iterations)
    labels = batch.views["completion"]["labels"]
    old = np.where(labels >= 0, rng.normal(-7.0, 0.5, labels.shape), 0.0).astype(np.float32)
    gb = with_extras(to_global(batch, mesh), old_token_lp=jax.numpy.asarray(old))
    state, raw = parts.step(state, gb)
    return jax.device_get(state.params), finalize_metrics(fetch(raw))


@pytest.mark.parametrize("loss_type,num_micro", [("dapo", 3), ("grpo", 3), ("dapo", 1)])
def test_inert_micro_batches_give_the_computed_update(tiny_f32, computed_policy, loss_type, num_micro):
    """Skipping the rows without advantage changes nothing a user sees: the same loss, metrics
    and new parameters as computing them (f32; with one micro-batch nothing is inert)."""
    p_skip, m_skip = _policy_step(tiny_f32, "policy", loss_type, num_micro)
    p_all, m_all = _policy_step(tiny_f32, computed_policy, loss_type, num_micro)
    assert m_skip.keys() == m_all.keys() and m_skip["finite"] == 1.0 and m_skip["grad_norm"] > 0
    assert 0 < m_all["clip_ratio/region_mean"] < 1
    for k in m_all:
        np.testing.assert_allclose(m_skip[k], m_all[k], rtol=1e-6, atol=1e-9, err_msg=k)
    # Adam's first step is lr * g / (|g| + eps): a gradient element near eps turns the two programs'
    # rounding into up to 2e-7 (seen once in 4096 with XLA:CPU's older fusion emitters); a wrong
    # gradient moves elements by up to lr (1e-3).
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-6), p_skip, p_all)


def test_an_inert_micro_batch_is_not_run(tiny_f32, computed_policy):
    """Rows that would give NaN in a forward: computed, the step is not finite (and skipped);
    with their advantage 0 and no KL term, the step never runs them and applies the update."""
    _, m_all = _policy_step(tiny_f32, computed_policy, "dapo", 3, poison=True)
    assert m_all["finite"] == 0.0
    _, m_skip = _policy_step(tiny_f32, "policy", "dapo", 3, poison=True)
    _, m_clean = _policy_step(tiny_f32, "policy", "dapo", 3)
    assert m_skip["finite"] == 1.0
    assert m_skip["loss"] == m_clean["loss"] and m_skip["grad_norm"] == m_clean["grad_norm"]
