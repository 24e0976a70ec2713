"""Token and sequence log-probabilities without materialising fp32 [B, T, V] logits.

With a 49k-token vocabulary the logits dominate a train step's memory (``B · T · V · 4`` bytes in
fp32, again for their gradient; docs/benchmarks.md has the measured cost). :func:`token_logprobs` fuses the LM head with the
log-softmax and the label gather, one sequence chunk at a time. Peak extra memory is one chunk of
f32 logits, ``B · chunk_size · V · 4`` bytes (or ``B · chunk_size · vocab_chunk_size · 4`` with
vocabulary chunking), independent of T.

Only the positions that carry a label are worth a logit: a prompt's positions are not (in a
rollout or preference batch they are a third to a half of T). The sequence path therefore reads
each row from its first label on (the rows' label spans aligned at column 0), runs only as many
chunks as the longest span needs and puts the results back in the rows' own columns. The trip
count is dynamic, so the gradient is a custom rule: the backward recomputes a chunk's logits from
the saved log-sum-exp and sums the LM head's gradient in f32 (``E · V · 4`` bytes, 2 more per
entry than a sum in bf16: 1 GB for Llama 3's 4096 x 128256 head). With vocabulary chunking the
chunks are taken over all positions under ``lax.map`` and ``jax.checkpoint``.

Chunks are cut along the sequence axis and keep the batch axis whole, so a batch-sharded
``hidden`` stays batch-sharded inside the loop.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from jaxevo.models.matmul import einsum_f32

Array = jax.Array


def _capped(z: Array, softcap: float | None) -> Array:
    """Gemma's final-logit soft-capping ``softcap * tanh(z / softcap)``, or ``z``."""
    return z if softcap is None else softcap * jnp.tanh(z / softcap)


def _matmul(h: Array, w: Array, softcap: float | None = None) -> Array:
    """[B, C, E] @ [E, V'] in the input dtype, accumulated and returned in f32, soft-capped."""
    return _capped(einsum_f32("bce,ev->bcv", h, w), softcap)


def _spans(labels: Array, chunk: int) -> tuple[Array, Array]:
    """Per row the first labelled column ``first`` [B] (0 for a row without labels) and the
    number of ``chunk``-wide chunks that cover the longest row's first..last labelled columns."""
    t = labels.shape[1]
    has = labels >= 0
    first = jnp.argmax(has, axis=1).astype(jnp.int32)
    last = (t - 1 - jnp.argmax(has[:, ::-1], axis=1)).astype(jnp.int32)
    span = jnp.where(jnp.any(has, axis=1), last - first + 1, 0)
    return first, (jnp.max(span) + chunk - 1) // chunk


def _shifted(x: Array, first: Array, start: Array, size: int, fill=None) -> Array:
    """``x[b, first[b] + start + j]`` for ``j < size`` ([B, size, ...]); columns past the end
    read the last column, or ``fill`` when given."""
    t = x.shape[1]
    col = first[:, None] + start + jnp.arange(size, dtype=jnp.int32)[None]
    idx = jnp.minimum(col, t - 1)
    y = jnp.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)
    if fill is None:
        return y
    return jnp.where((col < t).reshape(idx.shape + (1,) * (x.ndim - 2)), y, fill)


def _unshifted(y: Array, first: Array, t: int) -> Array:
    """Inverse of the alignment: ``out[b, c] = y[b, c - first[b]]`` (0 outside ``y``); [B, t, ...]."""
    n = y.shape[1]
    j = jnp.arange(t, dtype=jnp.int32)[None] - first[:, None]
    inside = (j >= 0) & (j < n)
    idx = jnp.clip(j, 0, n - 1)
    expand = (1,) * (y.ndim - 2)
    out = jnp.take_along_axis(y, idx.reshape(idx.shape + expand), axis=1)
    return jnp.where(inside.reshape(inside.shape + expand), out, jnp.zeros((), y.dtype))


def _span_forward(h, w, labels, chunk, softcap):
    """Token log-probs [B, T] and the aligned log-sum-exp [B, n_max · chunk] (see the module doc)."""
    b, t, _ = h.shape
    first, n = _spans(labels, chunk)
    width = -(-t // chunk) * chunk

    def body(i, acc):
        tlp, lse = acc
        hc = _shifted(h, first, i * chunk, chunk)
        lc = _shifted(labels, first, i * chunk, chunk, fill=-1)
        logits = _matmul(hc, w, softcap)
        lz = jax.nn.logsumexp(logits, axis=-1)
        picked = jnp.take_along_axis(logits, jnp.maximum(lc, 0)[..., None], axis=-1)[..., 0]
        tlp = jax.lax.dynamic_update_slice(tlp, jnp.where(lc >= 0, picked - lz, 0.0), (0, i * chunk))
        lse = jax.lax.dynamic_update_slice(lse, lz, (0, i * chunk))
        return tlp, lse

    zeros = jnp.zeros((b, width), jnp.float32)
    tlp, lse = jax.lax.fori_loop(0, n, body, (zeros, zeros))
    return _unshifted(tlp, first, t), lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _span_logprobs(h, w, labels, chunk, softcap):
    return _span_forward(h, w, labels, chunk, softcap)[0]


def _span_logprobs_fwd(h, w, labels, chunk, softcap):
    tlp, lse = _span_forward(h, w, labels, chunk, softcap)
    return tlp, (h, w, labels, lse)


def _span_logprobs_bwd(chunk, softcap, res, g):
    """d log p(y) / d logits = onehot(y) - softmax, per chunk from the saved log-sum-exp; the
    products take the operands' dtype (the cotangent rounded to it, as `einsum_f32`'s rule)."""
    h, w, labels, lse = res
    b, t, e = h.shape
    first, n = _spans(labels, chunk)

    def body(i, acc):
        dh, dw = acc
        hc = _shifted(h, first, i * chunk, chunk)
        lc = _shifted(labels, first, i * chunk, chunk, fill=-1)
        gc = jnp.where(lc >= 0, _shifted(g, first, i * chunk, chunk), 0.0)
        z = jnp.einsum("bce,ev->bcv", hc, w, preferred_element_type=jnp.float32)
        logits = _capped(z, softcap)
        p = jnp.exp(logits - jax.lax.dynamic_slice_in_dim(lse, i * chunk, chunk, axis=1)[..., None])
        ids = jax.lax.broadcasted_iota(jnp.int32, logits.shape, 2)
        d = jnp.where(ids == lc[..., None], gc[..., None], 0.0) - gc[..., None] * p
        if softcap is not None:
            d = d * (1.0 - jnp.square(jnp.tanh(z / softcap)))
        d = d.astype(w.dtype)
        dhc = jnp.einsum("bcv,ev->bce", d, w, preferred_element_type=jnp.float32).astype(h.dtype)
        dw = dw + jnp.einsum("bce,bcv->ev", hc, d, preferred_element_type=jnp.float32)
        return jax.lax.dynamic_update_slice(dh, dhc, (0, i * chunk, 0)), dw

    width = -(-t // chunk) * chunk
    init = (jnp.zeros((b, width, e), h.dtype), jnp.zeros(w.shape, jnp.float32))
    dh, dw = jax.lax.fori_loop(0, n, body, init)
    return _unshifted(dh, first, t), dw.astype(w.dtype), None


_span_logprobs.defvjp(_span_logprobs_fwd, _span_logprobs_bwd)


def _chunk_logprobs_vocab(h: Array, w: Array, lab: Array, vocab_chunk: int,
                          softcap: float | None = None) -> Array:
    """log softmax(h @ w)[lab] for one sequence chunk (h [B,C,E], lab [B,C] -> [B,C] f32), with an
    online log-sum-exp over vocabulary chunks."""
    e, v = w.shape
    nv = -(-v // vocab_chunk)
    pad = nv * vocab_chunk - v
    w_chunks = jnp.pad(w, ((0, 0), (0, pad))).reshape(e, nv, vocab_chunk).transpose(1, 0, 2)

    @jax.checkpoint
    def step(carry, xs):
        m, s, picked = carry
        wc, start = xs
        logits = _matmul(h, wc, softcap)
        ids = start + jax.lax.broadcasted_iota(jnp.int32, logits.shape, 2)
        logits = jnp.where(ids < v, logits, -jnp.inf)  # padded vocabulary columns
        m_new = jax.lax.stop_gradient(jnp.maximum(m, jnp.max(logits, axis=-1)))
        s = s * jnp.exp(m - m_new) + jnp.sum(jnp.exp(logits - m_new[..., None]), axis=-1)
        picked = picked + jnp.sum(jnp.where(ids == lab[..., None], logits, 0.0), axis=-1)
        return (m_new, s, picked), None

    b, c = lab.shape
    init = (
        jnp.full((b, c), -jnp.inf, jnp.float32),
        jnp.zeros((b, c), jnp.float32),
        jnp.zeros((b, c), jnp.float32),
    )
    starts = jnp.arange(nv, dtype=jnp.int32) * vocab_chunk
    (m, s, picked), _ = jax.lax.scan(step, init, (w_chunks, starts))
    return picked - (m + jnp.log(s))


def token_logprobs(
    hidden: Array,
    lm_head: Array,
    labels: Array,
    *,
    chunk_size: int = 128,
    vocab_chunk_size: int | None = None,
    softcap: float | None = None,
) -> Array:
    """Log-probability of each label token, computed in sequence (and vocabulary) chunks.

    Args:
      hidden: [B, T, E] final hidden states (after the final norm); ``hidden[:, t]`` predicts
        ``labels[:, t]`` (the caller has already shifted).
      lm_head: [E, V] output projection (for tied embeddings pass ``embedding.T``). Both operands
        are cast to their promoted dtype; the matmul accumulates in f32
        (``preferred_element_type``) and the log-softmax runs in f32.
      labels: int [B, T] target ids. Negative ids (e.g. -100 = ignore) give log-prob 0.
      chunk_size: sequence positions per chunk; T is padded internally to a multiple of it.
      vocab_chunk_size: if set, also split V into chunks of this size (online log-sum-exp), so a
        chunk's f32 logits are ``[B, chunk_size, vocab_chunk_size]``.
      softcap: the model's final-logit soft-capping (``ModelConfig.final_logit_softcap``), applied
        to the logits before the log-softmax.

    Returns: f32 [B, T] token log-probs (0 where ``labels < 0``); differentiable w.r.t.
    ``hidden`` and ``lm_head``.
    """
    b, t, e = hidden.shape
    dtype = jnp.promote_types(hidden.dtype, lm_head.dtype)
    hidden, lm_head = hidden.astype(dtype), lm_head.astype(dtype)
    labels = jnp.asarray(labels, jnp.int32)
    chunk = max(1, min(int(chunk_size), t))
    if vocab_chunk_size is None or vocab_chunk_size >= lm_head.shape[1]:
        return _span_logprobs(hidden, lm_head, labels, chunk, softcap)
    n = -(-t // chunk)
    pad = n * chunk - t
    h = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    lab = jnp.pad(labels, ((0, 0), (0, pad)), constant_values=-1)
    # [n, B, C, ...]: the loop runs over sequence chunks, each keeps the whole batch.
    h = h.reshape(b, n, chunk, e).transpose(1, 0, 2, 3)
    lab = lab.reshape(b, n, chunk).transpose(1, 0, 2)
    vc = int(vocab_chunk_size)
    body = jax.checkpoint(lambda hc, w, lc: _chunk_logprobs_vocab(hc, w, lc, vc, softcap))
    out = jax.lax.map(lambda xs: body(xs[0], lm_head, xs[1]), (h, lab))  # [n, B, C]
    out = out.transpose(1, 0, 2).reshape(b, n * chunk)[:, :t]
    return jnp.where(labels >= 0, out, 0.0)


def sequence_logps(token_lp: Array, mask: Any) -> tuple[Array, Array]:
    """Masked sum of token log-probs per sequence.

    Args: ``token_lp`` f32 [B, T]; ``mask`` [B, T] (bool or 0/1), 1 on response tokens.
    Returns: ``(sum [B] f32, count [B] f32)``; ``sum / max(count, 1)`` is the average log-prob
    used by SimPO / ORPO / IPO (or pass ``count`` as their ``*_lengths``).
    """
    m = jnp.asarray(mask).astype(bool)
    total = jnp.sum(jnp.where(m, token_lp.astype(jnp.float32), 0.0), axis=-1)
    return total, jnp.sum(m, axis=-1).astype(jnp.float32)


def naive_token_logprobs(hidden: Array, lm_head: Array, labels: Array) -> Array:
    """Reference implementation with full [B, T, V] f32 logits (tests and tiny models only)."""
    dtype = jnp.promote_types(hidden.dtype, lm_head.dtype)
    logits = jnp.einsum(
        "bte,ev->btv", hidden.astype(dtype), lm_head.astype(dtype), preferred_element_type=jnp.float32
    )
    lp = jax.nn.log_softmax(logits, axis=-1)
    labels = jnp.asarray(labels, jnp.int32)
    picked = jnp.take_along_axis(lp, jnp.maximum(labels, 0)[..., None], axis=-1)[..., 0]
    return jnp.where(labels >= 0, picked, 0.0)
