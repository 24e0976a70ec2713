"""A reward model: the decoder of `transformer.py` plus a linear `score` head read at the last
non-padding token, as transformers' `*ForSequenceClassification` computes it.

    params = {"decoder": decoder_params, "score": w}       # w [E, L] (L = num_labels, 1 for rewards)
    logits = reward_logits(params, tokens, valid, cfg=cfg, pad_token_id=pad)   # [B, L] f32

Which token is read (transformers' `GenericForSequenceClassification.forward`): with a
`pad_token_id`, the rightmost position whose token id is not the pad id — so left and right
padding give the same result, and a real token equal to the pad id at the end of a sequence (a
pad = eos tokenizer) is skipped as transformers skips it; without one, the last real position.
The decoder's config must not expect an LM head (`tie_word_embeddings=True`): a sequence
classifier has none.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxevo.models.config import ModelConfig
from jaxevo.models.layers import F32
from jaxevo.models.transformer import Transformer, causal_mask, positions_from_valid

SCORE_HF_NAME = "score.weight"  # [L, E] in transformers


def last_token_index(tokens: jax.Array, valid: jax.Array, pad_token_id: int | None) -> jax.Array:
    """tokens, valid [B, T] -> [B] int32: the position the score head reads (see module doc).
    A row of pad ids only reads position 0, as transformers' argmax does. Padding is skipped by
    `valid` too, so it may hold any id (the trainer pads with 0): on rows padded with the pad id,
    as transformers sees them, the result is the same."""
    idx = jnp.arange(tokens.shape[1], dtype=jnp.int32)[None]
    keep = valid.astype(bool)
    if pad_token_id is not None:
        keep = keep & (tokens != pad_token_id)
    return jnp.argmax(idx * keep.astype(jnp.int32), axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("cfg", "pad_token_id"))
def reward_logits(params, tokens: jax.Array, valid: jax.Array, *, cfg: ModelConfig,
                  pad_token_id: int | None) -> jax.Array:
    """tokens, valid [B, T] (padding anywhere, filled with `pad_token_id`) -> logits [B, L] f32."""
    hidden, _ = Transformer(cfg).apply({"params": params["decoder"]}, tokens, positions_from_valid(valid),
                                       causal_mask(valid), return_hidden=True)  # each layer applies its own window
    return read_score(hidden, tokens, valid, params["score"], cfg.dtype, pad_token_id)


def read_score(hidden: jax.Array, tokens: jax.Array, valid: jax.Array, w: jax.Array, dtype,
               pad_token_id: int | None) -> jax.Array:
    """hidden [B, T, E], tokens / valid [B, T], head w [E, L] -> logits [B, L] f32: the head at
    `last_token_index`, in the compute ``dtype`` with f32 accumulation (as scoring and training
    both read it)."""
    last = last_token_index(tokens, valid, pad_token_id)
    h = jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]  # [B, E]
    return jnp.einsum("be,el->bl", h.astype(dtype), w.astype(dtype), preferred_element_type=F32)
