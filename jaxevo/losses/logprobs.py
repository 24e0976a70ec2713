"""Token and sequence log-probabilities without materialising fp32 [B, T, V] logits.

With a 49k-token vocabulary the logits dominate a train step's memory (``B · T · V · 4`` bytes in
fp32, again for their gradient; docs/benchmarks.md has the measured cost). :func:`token_logprobs` fuses the LM head with the
log-softmax and the label gather, one sequence chunk at a time under ``lax.map``; each chunk is
``jax.checkpoint``-ed, so the backward pass recomputes a chunk's logits instead of keeping them.
Peak extra memory is one chunk of f32 logits, ``B · chunk_size · V · 4`` bytes (or
``B · chunk_size · vocab_chunk_size · 4`` with vocabulary chunking), independent of T.

Chunks are cut along the sequence axis and keep the batch axis whole, so a batch-sharded
``hidden`` stays batch-sharded inside the loop.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxevo.models.matmul import einsum_f32

Array = jax.Array


def _matmul(h: Array, w: Array, softcap: float | None = None) -> Array:
    """[B, C, E] @ [E, V'] in the input dtype, accumulated and returned in f32; soft-capped to
    ``softcap * tanh(logits / softcap)`` when given (Gemma's final-logit soft-capping)."""
    logits = einsum_f32("bce,ev->bcv", h, w)
    return logits if softcap is None else softcap * jnp.tanh(logits / softcap)


def _chunk_logprobs(h: Array, w: Array, lab: Array, softcap: float | None = None) -> Array:
    """log softmax(h @ w)[lab] for one sequence chunk; h [B,C,E], lab [B,C] -> [B,C] f32."""
    logits = _matmul(h, w, softcap)
    lse = jax.nn.logsumexp(logits, axis=-1)
    ids = jax.lax.broadcasted_iota(jnp.int32, logits.shape, 2)
    picked = jnp.sum(jnp.where(ids == lab[..., None], logits, 0.0), axis=-1)
    return picked - lse


def _chunk_logprobs_vocab(h: Array, w: Array, lab: Array, vocab_chunk: int,
                          softcap: float | None = None) -> Array:
    """Like :func:`_chunk_logprobs`, with an online log-sum-exp over vocabulary chunks."""
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
    n = -(-t // chunk)
    pad = n * chunk - t
    h = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    lab = jnp.pad(labels, ((0, 0), (0, pad)), constant_values=-1)
    # [n, B, C, ...]: the loop runs over sequence chunks, each keeps the whole batch.
    h = h.reshape(b, n, chunk, e).transpose(1, 0, 2, 3)
    lab = lab.reshape(b, n, chunk).transpose(1, 0, 2)

    if vocab_chunk_size is None or vocab_chunk_size >= lm_head.shape[1]:
        def body(hc, w, lc):
            return _chunk_logprobs(hc, w, lc, softcap)
    else:
        vc = int(vocab_chunk_size)

        def body(hc, w, lc):
            return _chunk_logprobs_vocab(hc, w, lc, vc, softcap)

    body = jax.checkpoint(body)
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
