"""The decoder-only transformer (Llama / Mistral / Qwen2 family), pure functional.

    model = Transformer(cfg)
    params = model.init(rng, tokens, positions, mask)["params"]          # or imported weights
    logits, _ = model.apply({"params": params}, tokens, positions, mask)  # [B, T, V] f32
    hidden, _ = model.apply(..., return_hidden=True)                      # [B, T, E]

Layers are one `nn.scan` over a stacked parameter tree (leading axis `layers`), so compile time does
not grow with depth. The KV cache is an explicit value passed in and returned (no mutable
collections): `init_cache(cfg, batch, length)` -> {"k", "v"} each [L, B, S, K, D].

Attention masks are built by the caller with `causal_mask` (training / prefill without cache) or
`cache_mask` (decoding over cache slots), so one forward serves every use.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxevo.models.config import ModelConfig
from jaxevo.models.layers import F32, DecoderLayer, RMSNorm, rope_cos_sin

REMAT = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


class Transformer(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, tokens, positions, mask, cache=None, cache_index=None, return_hidden=False):
        """tokens, positions [B, T] int32; mask [B, T, S] bool (S = T without cache).

        cache: {"k", "v"} [L, B, S, K, D] or None; cache_index: int32 scalar slot of tokens[:, 0].
        Returns (logits [B, T, V] f32 — or final-normed hidden [B, T, E] if return_hidden —,
        the updated cache or None).
        """
        cfg = self.cfg
        embedding = self.param(
            "embedding",
            nn.with_logical_partitioning(nn.initializers.normal(0.02), ("vocab", "embed")),
            (cfg.vocab_size, cfg.hidden_size), jnp.dtype(cfg.param_dtype))
        x = jnp.take(embedding, tokens, axis=0).astype(cfg.dtype)
        x = nn.with_logical_constraint(x, ("batch", "length", "act_embed"))
        cos, sin = rope_cos_sin(positions, cfg)

        layer = DecoderLayer
        if cfg.remat != "none":
            layer = nn.remat(layer, policy=REMAT[cfg.remat], prevent_cse=False)
        stack = nn.scan(
            layer,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=(nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast, 0),
            length=cfg.num_layers,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )(cfg, name="layers")
        layer_cache = None if cache is None else (cache["k"], cache["v"])
        if cache_index is None:
            cache_index = jnp.zeros((), jnp.int32)
        x, new_kv = stack(x, cos, sin, mask, cache_index, layer_cache)
        x = RMSNorm(cfg, name="final_norm")(x)
        new_cache = None
        if cache is not None:  # one in-place write of every layer's new keys/values
            at = (0, 0, cache_index, 0, 0)
            new_cache = {"k": jax.lax.dynamic_update_slice(cache["k"], new_kv[0], at),
                         "v": jax.lax.dynamic_update_slice(cache["v"], new_kv[1], at)}
        if return_hidden:
            return x, new_cache
        if cfg.tie_word_embeddings:
            w = embedding.T
        else:
            w = self.param(
                "lm_head",
                nn.with_logical_partitioning(nn.initializers.normal(0.02), ("embed", "vocab")),
                (cfg.hidden_size, cfg.vocab_size), jnp.dtype(cfg.param_dtype))
        return logits_from_hidden(x, w, cfg), new_cache


def lm_head_weight(params, cfg: ModelConfig) -> jax.Array:
    """The output projection [E, V] (the transposed embedding when tied)."""
    return params["embedding"].T if cfg.tie_word_embeddings else params["lm_head"]


def logits_from_hidden(hidden, w, cfg: ModelConfig) -> jax.Array:
    """hidden [..., E] @ w [E, V] -> f32 logits [..., V]."""
    return jnp.einsum("...e,ev->...v", hidden.astype(cfg.dtype), w.astype(cfg.dtype),
                      preferred_element_type=F32)


def init_cache(cfg: ModelConfig, batch: int, length: int, dtype=None) -> dict[str, jax.Array]:
    """Zeroed KV cache {"k", "v"}: [layers, batch, length, kv_heads, head_dim]."""
    shape = (cfg.num_layers, batch, length, cfg.num_kv_heads, cfg.head_dim)
    dt = jnp.dtype(dtype or cfg.dtype)
    return {"k": jnp.zeros(shape, dt), "v": jnp.zeros(shape, dt)}


def causal_mask(valid: jax.Array, segment_ids: jax.Array | None = None,
                sliding_window: int | None = None) -> jax.Array:
    """valid [B, T] (1 = real token) -> [B, T, T] bool: causal, real keys only, same segment.

    Rows of padding queries may be all False; the softmax then sees finfo.min everywhere and stays
    finite (their outputs are never used).
    """
    t = valid.shape[1]
    idx = jnp.arange(t)
    m = (idx[None, :] <= idx[:, None])[None] & valid.astype(bool)[:, None, :]
    if segment_ids is not None:
        m &= segment_ids[:, :, None] == segment_ids[:, None, :]
    if sliding_window:
        m &= (idx[:, None] - idx[None, :] < sliding_window)[None]
    return m


def cache_mask(kv_valid: jax.Array, query_slots: jax.Array,
               sliding_window: int | None = None) -> jax.Array:
    """kv_valid [B, S] (slot holds a real token), query_slots [T] -> [B, T, S] bool.

    A query at slot q sees real keys at slots <= q (its own key is written before attention).
    """
    s = jnp.arange(kv_valid.shape[1])
    m = (s[None, :] <= query_slots[:, None])[None] & kv_valid.astype(bool)[:, None, :]
    if sliding_window:
        m &= (query_slots[:, None] - s[None, :] < sliding_window)[None]
    return m


def positions_from_valid(valid: jax.Array) -> jax.Array:
    """valid [B, T] -> positions [B, T]: 0,1,2.. over real tokens (left padding gets 0)."""
    return jnp.maximum(jnp.cumsum(valid.astype(jnp.int32), axis=1) - 1, 0)
