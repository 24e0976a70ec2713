"""Logit processors and token choice as pure functions of f32 logits [N, V].

Order and semantics follow `transformers` (`generate`'s processor list): repetition penalty on the
raw logits, then temperature, top-k, top-p, min-p; greedy is `argmax` after the repetition penalty.

Sampling never draws V Gumbel numbers per row (`jax.random.categorical` is slow on CPU:
docs/benchmarks.md). A token is chosen by inverse-CDF with ONE uniform per row, in two levels
(blocks of 256 tokens, then the token inside the block), which costs a couple of passes over the
logits. Top-p without top-k avoids the full-vocabulary sort (slower still) with exact
rejection sampling over "top sets" {p > pivot}: draw from the current top set, accept if the token
is in the nucleus, otherwise every token no more likely than the rejected one is dropped and the
draw repeats (the accepted token is an exact draw from the nucleus; a couple of rounds typically).
With top-k, `lax.top_k` gives the k sorted candidates and top-p / min-p run on those exactly.

Ties at a top-k / top-p boundary are all kept (transformers keeps an arbitrary subset of them).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

F32 = jnp.float32
BLOCK = 256
MAX_REJECTION_ROUNDS = 64


class Knobs(NamedTuple):
    """Traced (dynamic) sampling values: changing them does not recompile."""

    temperature: jax.Array  # f32 scalar > 0 (unused when greedy)
    top_p: jax.Array  # f32 scalar in (0, 1]
    min_p: jax.Array  # f32 scalar in [0, 1]
    repetition_penalty: jax.Array  # f32 scalar > 0

    @classmethod
    def make(cls, temperature=1.0, top_p=1.0, min_p=0.0, repetition_penalty=1.0) -> "Knobs":
        return cls(*(jnp.asarray(x, F32) for x in (temperature, top_p, min_p, repetition_penalty)))


class Mode(NamedTuple):
    """Static (compile-time) choice of processors: one compiled program per distinct Mode."""

    greedy: bool = False
    top_k: int = 0  # 0 = off
    top_p: bool = False
    min_p: bool = False
    repetition_penalty: bool = False


# ------------------------------------------------------------------------------- processors
def repetition_penalty(logits, presence, penalty):
    """transformers' RepetitionPenaltyLogitsProcessor: for tokens already seen (prompt or output),
    positive logits are divided by `penalty`, negative ones multiplied. presence [N, V] bool."""
    pen = jnp.where(logits < 0, logits * penalty, logits / penalty)
    return jnp.where(presence, pen, logits)


def temperature(logits, t):
    return logits / t


def top_k_filter(logits, k: int):
    """Keep the k largest logits per row (ties at the k-th value kept), others -inf."""
    vals, _ = lax.top_k(logits, k)
    return jnp.where(logits >= vals[:, -1:], logits, -jnp.inf)


def top_p_keep_sorted(probs_desc, top_p):
    """Nucleus membership for probabilities sorted descending (normalised over the row): keep a
    token if the mass strictly before it is < top_p (transformers' rule); the first is always kept."""
    before = jnp.cumsum(probs_desc, axis=-1) - probs_desc
    keep = before < top_p
    return keep.at[..., 0].set(True)


def top_p_filter(logits, top_p):
    """Reference top-p on unsorted logits (full sort: slow on CPU; used in tests, not the loop)."""
    order = jnp.argsort(-logits, axis=-1)
    sorted_l = jnp.take_along_axis(logits, order, axis=-1)
    keep_sorted = top_p_keep_sorted(jax.nn.softmax(sorted_l, axis=-1), top_p)
    keep = jnp.zeros_like(keep_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(keep_sorted)
    # ties with the last kept value are kept too
    thresh = jnp.min(jnp.where(keep, logits, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(logits >= thresh, logits, -jnp.inf)


def min_p_filter(logits, min_p):
    """Keep tokens with p >= min_p * max p (scale-free, so it commutes with renormalisation)."""
    m = jnp.max(logits, axis=-1, keepdims=True)
    return jnp.where(jnp.exp(logits - m) >= min_p, logits, -jnp.inf)


def process(logits, mode: Mode, knobs: Knobs, presence=None):
    """All processors in transformers' order, as a masked logits array (reference / tests).
    The decode loop uses `choose` instead, which avoids sorting."""
    if mode.repetition_penalty:
        logits = repetition_penalty(logits, presence, knobs.repetition_penalty)
    if mode.greedy:
        return logits
    logits = temperature(logits, knobs.temperature)
    if mode.top_k:
        logits = top_k_filter(logits, mode.top_k)
    if mode.top_p:
        logits = top_p_filter(logits, knobs.top_p)
    if mode.min_p:
        logits = min_p_filter(logits, knobs.min_p)
    return logits


# ------------------------------------------------------------------------------ token choice
def argmax(x):
    """First index of the row maximum (jnp.argmax's ties rule): max + first-equal, about 2x
    faster than XLA:CPU's variadic argmax reduction over a 49k vocabulary."""
    m = jnp.max(x, axis=-1, keepdims=True)
    v = x.shape[-1]
    idx = jnp.min(jnp.where(x == m, lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1), v), axis=-1)
    return jnp.minimum(idx, v - 1).astype(jnp.int32)  # NaN rows: no match; clamp in range


def _first_true_or_last(cond, positive):
    """Index of the first position with cond & positive; if none, the last positive one."""
    hit = cond & positive
    n = cond.shape[-1]
    first = jnp.argmax(hit, axis=-1)
    last_pos = n - 1 - jnp.argmax(positive[..., ::-1], axis=-1)
    return jnp.where(jnp.any(hit, axis=-1), first, last_pos)


def _cumsum(x):
    """Inclusive cumulative sum over the last axis (<= a few hundred entries) as one matrix product
    with a triangular matrix: XLA:CPU lowers `jnp.cumsum` to a loop of small ops, which costs more
    than the product at the sizes used here. Rounding may differ from a sequential sum by a few
    ulps (callers do not rely on monotonicity)."""
    k = x.shape[-1]
    tri = (jnp.arange(k)[:, None] <= jnp.arange(k)[None, :]).astype(x.dtype)
    return jnp.matmul(x, tri, precision=lax.Precision.HIGHEST)


def inverse_cdf(weights, u, block: int = BLOCK):
    """Draw index i with probability weights[i] / sum(weights) per row, from u ~ U[0, 1) [N].

    weights [N, V] >= 0 with a positive entry per row (unnormalised). Two levels: a block of
    `block` entries, then the entry in it. A zero-weight entry is never returned.
    """
    n, v = weights.shape
    if v <= block:
        block = v
    nb = -(-v // block)
    pad = nb * block - v
    w = jnp.pad(weights, ((0, 0), (0, pad))).reshape(n, nb, block)
    bsum = jnp.sum(w, axis=-1)
    bcum = _cumsum(bsum)
    target = u * bcum[:, -1]
    b = _first_true_or_last(bcum > target[:, None], bsum > 0)
    inner = jnp.take_along_axis(w, b[:, None, None], axis=1)[:, 0]  # [N, block]
    before = jnp.take_along_axis(bcum - bsum, b[:, None], axis=1)[:, 0]
    rest = jnp.maximum(target - before, 0.0)
    j = _first_true_or_last(_cumsum(inner) > rest[:, None], inner > 0)
    return (b * block + j).astype(jnp.int32)


def _uniform(key, salt):
    return jax.random.uniform(jax.random.fold_in(key, salt), (), F32)


def choose(logits, keys, mode: Mode, knobs: Knobs, presence=None):
    """Next token per row from raw f32 logits [N, V]. keys: one PRNG key per row (already folded
    with the row's global index and the step), so a row's draw never depends on its batch or mesh.
    """
    if mode.repetition_penalty:
        logits = repetition_penalty(logits, presence, knobs.repetition_penalty)
    if mode.greedy:
        return argmax(logits)
    logits = temperature(logits, knobs.temperature)
    u0 = jax.vmap(_uniform, in_axes=(0, None))(keys, 0)

    if mode.top_k:
        vals, idx = lax.top_k(logits, mode.top_k)  # sorted descending
        p = jax.nn.softmax(vals, axis=-1)
        keep = jnp.ones_like(p, bool)
        if mode.top_p:
            keep &= top_p_keep_sorted(p, knobs.top_p)
        if mode.min_p:
            keep &= p >= knobs.min_p * p[:, :1]
        j = inverse_cdf(jnp.where(keep, p, 0.0), u0)
        return jnp.take_along_axis(idx, j[:, None], axis=1)[:, 0].astype(jnp.int32)

    e = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))  # max entry is exactly 1
    w = jnp.where(e >= knobs.min_p, e, 0.0) if mode.min_p else e
    if not mode.top_p:
        return inverse_cdf(w, u0)

    # Exact nucleus sampling by rejection over top sets (see module doc).
    z = jnp.sum(e, axis=-1)
    n = logits.shape[0]

    def cond(c):
        r, accepted, _, _ = c
        return (r < MAX_REJECTION_ROUNDS) & ~jnp.all(accepted)

    def body(c):
        r, accepted, tok, pivot = c
        u = jax.vmap(_uniform, in_axes=(0, None))(keys, r)  # round 0 draws u0
        j = inverse_cdf(jnp.where(e > pivot[:, None], w, 0.0), u)
        ej = jnp.take_along_axis(e, j[:, None], axis=1)
        above = jnp.sum(jnp.where(e > ej, e, 0.0), axis=-1)
        ok = (above < knobs.top_p * z) | (ej[:, 0] >= 1.0)
        tok = jnp.where(accepted, tok, j)
        pivot = jnp.where(accepted | ok, pivot, ej[:, 0])
        return r + 1, accepted | ok, tok, pivot

    init = (jnp.int32(0), jnp.zeros((n,), bool), jnp.zeros((n,), jnp.int32), jnp.full((n,), -1.0, F32))
    _, accepted, tok, _ = lax.while_loop(cond, body, init)
    return jnp.where(accepted, tok, argmax(logits))


def token_logprobs(logits, tokens):
    """log softmax(raw logits)[token], f32 [N] — the model's own (temperature-1) distribution."""
    lse = jax.nn.logsumexp(logits, axis=-1)
    return jnp.take_along_axis(logits, tokens[:, None], axis=1)[:, 0] - lse
