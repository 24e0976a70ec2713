"""One row per group, its prompt run once (`grpo.share_prompt`): the same log-probs, loss, metrics
and update as one row per completion, on a tiny random model in f32."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxevo.sharding import make_mesh
from jaxevo.train.builder import build_step
from jaxevo.train.config import ObjectiveSection, OptimSection, TrainConfig
from jaxevo.train.rollout import group_batch, micro_order, rollout_batch, token_logps_fn, with_extras
from jaxevo.train.state import init_state
from jaxevo.train.step import fetch, finalize_metrics, to_global
from jaxevo.weights.load import load_pretrained

G = 3


@pytest.fixture(scope="module")
def tiny_f32(tiny_model):
    return load_pretrained(tiny_model, dtype="float32", param_dtype="float32")


def _rollouts(seed=0, groups=4):
    rng = np.random.default_rng(seed)
    prompts = [list(rng.integers(5, 1000, size=n)) for n in rng.integers(2, 9, groups)]
    comps = [list(rng.integers(5, 1000, size=n)) for n in rng.integers(0, 8, groups * G)]
    comps[1] = []  # an empty completion (no label) is allowed
    adv = rng.normal(size=groups * G).astype(np.float32)
    return prompts, comps, adv


def test_group_batch_layout_by_hand():
    b = group_batch([[7, 8, 9]], [[1, 2], [3], []], [0.5, -1.0, 0.0], 3, pad_to_multiple=4)
    v = b.views["completion"]
    assert list(v["tokens"][0]) == [7, 8, 9, 1, 2, 9, 3, 9]  # 8 tokens: a multiple of 4
    assert list(v["segments"][0]) == [-1, -1, 1, 1, 1, 2, 2, 3]
    assert list(v["positions"][0]) == [0, 1, 2, 3, 4, 2, 3, 2]
    assert list(v["labels"][0]) == [-1, -1, 1, 2, -1, 3, -1, -1]
    assert b.extras["columns"].tolist() == [[[2, 3, -1, -1], [5, -1, -1, -1], [-1, -1, -1, -1]]]
    assert b.extras["advantage"].tolist() == [[0.5, -1.0, 0.0]]
    with pytest.raises(ValueError, match="empty prompt"):
        group_batch([[]], [[1]], [0.0], 1)
    with pytest.raises(ValueError, match="4 completions for 1 prompts x 3"):
        group_batch([[1]], [[1]] * 4, [0.0] * 4, 3)


def test_a_completion_sees_its_prompt_and_itself_only(tiny_f32):
    """Token log-probs read from a group row equal those of each completion's own row."""
    prompts, comps, adv = _rollouts()
    mesh = make_mesh((1, -1, 1))
    fn = token_logps_fn(tiny_f32.cfg, mesh)
    rows = rollout_batch([p for p in prompts for _ in range(G)], comps, adv, pad_to_multiple=8)
    want = np.asarray(fn(tiny_f32.params, to_global(rows, mesh)))
    grouped = group_batch(prompts, comps, adv, G, pad_to_multiple=8)
    got = np.asarray(fn(tiny_f32.params, to_global(grouped, mesh)))
    cols = grouped.extras["columns"]
    labels = rows.views["completion"]["labels"]
    for k in range(len(prompts)):
        for i in range(G):
            c = comps[k * G + i]
            at = np.flatnonzero(labels[k * G + i] >= 0)
            assert len(at) == len(c)
            np.testing.assert_allclose(got[k, cols[k, i, :len(c)]], want[k * G + i, at], rtol=0, atol=2e-6)


def _step(tiny_f32, batch, tc, old):
    mesh = make_mesh((1, -1, 1))
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tiny_f32.params)
    parts = build_step(tc, tiny_f32.cfg, mesh, abstract, 10)
    state = init_state(tiny_f32.params, parts.tx, 0, parts.state_shardings)
    state, raw = parts.step(state, with_extras(to_global(batch, mesh), old_token_lp=old))
    return jax.device_get(state.params), finalize_metrics(fetch(raw))


@pytest.mark.parametrize("loss_type,flat", [("dapo", False), ("grpo", True), ("dr_grpo", False),
                                            ("bnpo", False)])
def test_group_rows_give_the_same_update(tiny_f32, loss_type, flat):
    """A step on group rows (2 micro-batches of 2 groups; with `flat` a group of advantage 0,
    skipped) equals the step on completion rows (2 micro-batches of 6 rows)."""
    prompts, comps, adv = _rollouts(1)
    if flat:
        adv[3:6] = 0.0
    hp = {"epsilon_low": 0.2, "epsilon_high": 0.28, "max_completion_length": 8}
    # eps=1e-3: Adam's first update would turn round-off in near-zero gradient entries into ±lr
    opt = OptimSection(lr=1e-3, schedule="constant", clip_norm=None, eps=1e-3)
    obj = ObjectiveSection(name="policy", loss_type=loss_type, beta=0.0, hparams=hp)
    mesh = make_mesh((1, -1, 1))
    lp = token_logps_fn(tiny_f32.cfg, mesh)
    rng = np.random.default_rng(2)
    # completion rows, in the order that puts a flat group in the last micro-batch
    order = micro_order(np.repeat(np.abs(adv).reshape(-1, G).sum(1) != 0, G), 2)
    rows = rollout_batch([prompts[i // G] for i in order], [comps[i] for i in order], adv[order],
                         pad_to_multiple=8)
    noise = rng.normal(-0.5, 0.5, rows.views["completion"]["labels"].shape).astype(np.float32)
    old_rows = jnp.asarray(np.asarray(lp(tiny_f32.params, to_global(rows, mesh))) + noise)
    p_rows, m_rows = _step(tiny_f32, rows, TrainConfig(batch_size=12, micro_batch_size=6, optim=opt,
                                                       objective=obj), old_rows)
    # group rows: the same old log-probs, put at the group rows' columns
    gorder = micro_order(np.abs(adv).reshape(-1, G).sum(1) != 0, 2)
    grouped = group_batch([prompts[k] for k in gorder], [comps[k * G + i] for k in gorder for i in range(G)],
                          adv.reshape(-1, G)[gorder].reshape(-1), G, pad_to_multiple=8)
    cols = grouped.extras["columns"]
    old_g = np.zeros(grouped.views["completion"]["labels"].shape, np.float32)
    labels = rows.views["completion"]["labels"]
    where = {int(o): r for r, o in enumerate(order)}  # completion -> its row in `rows`
    for r, k in enumerate(gorder):
        for i in range(G):
            row = where[k * G + i]
            n = len(comps[k * G + i])
            old_g[r, cols[r, i, :n]] = np.asarray(old_rows)[row, labels[row] >= 0]
    p_grp, m_grp = _step(tiny_f32, grouped, TrainConfig(batch_size=4, micro_batch_size=2, optim=opt,
                                                        objective=obj), jnp.asarray(old_g))
    assert m_grp.keys() == m_rows.keys() and m_grp["finite"] == 1.0
    assert 0 < m_rows["clip_ratio/region_mean"] < 1
    for k in m_rows:
        np.testing.assert_allclose(m_grp[k], m_rows[k], rtol=2e-5, atol=1e-8, err_msg=k)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=2e-6), p_grp, p_rows)
