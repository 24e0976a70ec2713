"""Logit processors and token choice: transformers' semantics, exact sampling distributions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxevo.sampling.processors import Knobs, Mode, argmax, choose, inverse_cdf, process

V = 40
LOGITS = np.random.RandomState(0).normal(0, 2.0, (3, V)).astype(np.float32)
PRESENCE = np.zeros((3, V), bool)
PRESENCE[:, [1, 5, 7]] = True


@pytest.mark.torch
def test_processors_match_transformers():
    torch = pytest.importorskip("torch")
    from transformers.generation.logits_process import (MinPLogitsWarper, RepetitionPenaltyLogitsProcessor,
                                                        TemperatureLogitsWarper, TopKLogitsWarper,
                                                        TopPLogitsWarper)

    ids = torch.tensor([[1, 5, 7]] * 3)
    scores = torch.tensor(LOGITS)
    ref = RepetitionPenaltyLogitsProcessor(1.3)(ids, scores.clone())
    for warper in (TemperatureLogitsWarper(0.7), TopKLogitsWarper(9), TopPLogitsWarper(0.8), MinPLogitsWarper(0.05)):
        ref = warper(ids, ref)
    got = process(jnp.asarray(LOGITS), Mode(top_k=9, top_p=True, min_p=True, repetition_penalty=True),
                  Knobs.make(0.7, 0.8, 0.05, 1.3), jnp.asarray(PRESENCE))
    ref = ref.numpy()
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(ref))
    np.testing.assert_allclose(np.where(np.isfinite(ref), got, 0), np.where(np.isfinite(ref), ref, 0), rtol=1e-6)


def test_argmax_and_inverse_cdf():
    x = jnp.asarray([[1.0, 3.0, 3.0, 0.0], [-1.0, -2.0, -0.5, -0.5]])
    np.testing.assert_array_equal(argmax(x), [1, 2])
    w = jnp.asarray([[0.0, 1.0, 0.0, 3.0]] * 4)
    np.testing.assert_array_equal(inverse_cdf(w, jnp.asarray([0.0, 0.2, 0.25, 0.999999])), [1, 1, 3, 3])
    # zero-weight entries are never drawn, at any block boundary
    big = jnp.zeros((2, 1000)).at[:, 511].set(1.0).at[:, 700].set(1.0)
    np.testing.assert_array_equal(inverse_cdf(big, jnp.asarray([0.0, 1.0 - 1e-7])), [511, 700])


MODES = [
    (Mode(), Knobs.make(1.0)),
    (Mode(), Knobs.make(0.6)),
    (Mode(top_k=5), Knobs.make(0.9)),
    (Mode(top_p=True), Knobs.make(1.0, top_p=0.7)),
    (Mode(top_p=True, min_p=True), Knobs.make(1.2, top_p=0.9, min_p=0.1)),
    (Mode(top_k=12, top_p=True, min_p=True, repetition_penalty=True), Knobs.make(0.8, 0.85, 0.02, 1.5)),
]


@pytest.mark.parametrize("mode,knobs", MODES, ids=[str(i) for i in range(len(MODES))])
def test_choose_samples_the_processed_distribution(mode, knobs):
    """Token frequencies over 20000 draws match softmax(process(logits)) (chi-square, fixed seed)."""
    from scipy import stats

    n = 20000
    logits = jnp.broadcast_to(jnp.asarray(LOGITS[0]), (n, V))
    pres = jnp.broadcast_to(jnp.asarray(PRESENCE[0]), (n, V))
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.key(0), jnp.arange(n))
    toks = np.asarray(jax.jit(lambda l, k, p: choose(l, k, mode, knobs, p))(logits, keys, pres))
    ref = np.asarray(jax.nn.softmax(process(jnp.asarray(LOGITS[:1]), mode, knobs, jnp.asarray(PRESENCE[:1])))[0],
                     np.float64)
    counts = np.bincount(toks, minlength=V)
    assert counts[ref == 0].sum() == 0, "drew a filtered-out token"
    exp = ref / ref.sum() * n
    keep = exp >= 5
    obs, e = counts[keep], exp[keep]
    if not keep.all() and exp[~keep].sum() > 0:
        obs, e = np.append(obs, counts[~keep].sum()), np.append(e, exp[~keep].sum())
    e = e * obs.sum() / e.sum()
    assert stats.chisquare(obs, e).pvalue > 1e-3


def test_greedy_and_top_k_one():
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.key(0), jnp.arange(3))
    lg = jnp.asarray(LOGITS)
    g = choose(lg, keys, Mode(greedy=True), Knobs.make())
    np.testing.assert_array_equal(g, np.argmax(LOGITS, -1))
    np.testing.assert_array_equal(choose(lg, keys, Mode(top_k=1), Knobs.make(0.5)), g)
    np.testing.assert_array_equal(choose(lg, keys, Mode(top_p=True), Knobs.make(1.0, top_p=1e-6)), g)


def test_buckets():
    from jaxevo.sampling.api import batch_bucket, length_bucket

    assert [length_bucket(x) for x in (1, 16, 17, 24, 25, 33, 100, 200, 256)] == [16, 16, 24, 24, 32, 48, 128, 256, 256]
    assert length_bucket(300, chunk=256) == 512 and length_bucket(5, minimum=8, chunk=1 << 30) == 8
    assert [batch_bucket(x) for x in (1, 3, 5, 64)] == [1, 4, 8, 64]
    assert batch_bucket(3, multiple=8) == 8 and batch_bucket(40, maximum=48) == 48
    assert batch_bucket(10, multiple=4, maximum=6) == 12  # never below the rows, a multiple of the shards


def test_packed_rows():
    from jaxevo.sampling.params import packed_rows

    # 64 prompts x 96 slots holding 4,531 real tokens (the benchmark's first batch): 3/4 of them
    assert packed_rows(4531, 64 * 96) == 4608 and packed_rows(1536, 64 * 96) == 1536
    assert packed_rows(4609, 64 * 96) == 0  # above 3/4: all of them, unpacked
    assert packed_rows(99, 8 * 32) == 128 and packed_rows(10, 30) == 0  # 30 slots: not in quarters


def test_cache_segments():
    from jaxevo.sampling.params import cache_segments

    assert cache_segments(96, 128) == [128, 160, 192, 224]  # 4 segments of 32
    assert cache_segments(16, 96) == [48, 80, 112]  # 32 slots at least
    assert cache_segments(96, 256) == [160, 224, 288, 352]  # at most 4
    assert cache_segments(16, 200) == [80, 144, 208, 216]  # ceil(200 / 4) -> 64; the last one T + M
    assert cache_segments(96, 48) == [144] and cache_segments(8, 16) == [24]  # too short to split
