"""Building blocks of the decoder: RMSNorm, RoPE, grouped-query attention, SwiGLU MLP.

Dtype recipe (DESIGN.md): weights are stored in `param_dtype` (f32 master copy) and cast to the
compute `dtype` at use; every matmul accumulates in f32 (`preferred_element_type`), norms, RoPE
and softmax run in f32. On CPU this is what lets XLA's bf16 dot reach 2x its plain speed.

Every parameter carries logical axis names; `jaxevo.sharding.RULES` maps them onto the mesh.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxevo.models.config import ModelConfig

F32 = jnp.float32


def _param(mod: nn.Module, name: str, shape, axes, init, cfg: ModelConfig):
    return mod.param(name, nn.with_logical_partitioning(init, axes), shape, jnp.dtype(cfg.param_dtype))


def _weight(mod: nn.Module, name: str, shape, axes, init, cfg: ModelConfig):
    """A matmul weight as used: its compute-dtype copy, gathered over the fsdp axis (ZeRO-3).

    The stored parameter stays sharded on `embed` over fsdp; the constraint makes XLA's SPMD
    partitioner all-gather each layer's (compute-dtype) weight just before its matmul. Without it
    the partitioner may instead keep the weight sharded on the contracting dim and compute partial
    products for the WHOLE batch on every device, then all-reduce them: for Llama-3.1-8B on
    v5e-64 (`jaxevo plan`) that meant bf16[128, 2048, 14336] MLP products per chip and 39 GB of
    temporaries (docs/scaling.md). A no-op without a mesh."""
    w = _param(mod, name, shape, axes, init, cfg)
    return gathered(w, axes, cfg.dtype)


def gathered(w, axes, dtype):
    """`w` cast to `dtype` and constrained to its sharding with `embed` replicated (see `_weight`)."""
    return nn.with_logical_constraint(w.astype(dtype), tuple(None if a == "embed" else a for a in axes))


def dense(x, w, spec: str, dtype):
    """einsum in the compute dtype with f32 accumulation, result in the compute dtype."""
    return jnp.einsum(spec, x.astype(dtype), w.astype(dtype), preferred_element_type=F32).astype(dtype)


class RMSNorm(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x):
        scale = _param(self, "scale", (x.shape[-1],), ("norm",), nn.initializers.ones, self.cfg)
        xf = x.astype(F32)
        xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.cfg.rms_norm_eps)
        # transformers multiplies the weight by the normalised input cast back to its dtype.
        return (scale.astype(F32) * xf.astype(x.dtype).astype(F32)).astype(self.cfg.dtype)


# ---------------------------------------------------------------------------------- RoPE
def rope_inv_freq(cfg: ModelConfig) -> np.ndarray:
    """Inverse frequencies [head_dim // 2] (f32), with linear / llama3 scaling as in transformers."""
    d = cfg.head_dim
    inv = (1.0 / (cfg.rope_theta ** (np.arange(0, d, 2, dtype=np.int64).astype(np.float32) / d)))
    inv = inv.astype(np.float32)
    rs = cfg.rope_scaling_dict
    if not rs:
        return inv
    kind = rs.get("rope_type", rs.get("type"))
    if kind == "linear":
        return (inv / np.float32(rs["factor"])).astype(np.float32)
    # llama3: long wavelengths are divided by `factor`, short kept, the band between interpolated.
    factor = rs["factor"]
    low, high = rs.get("low_freq_factor", 1.0), rs.get("high_freq_factor", 4.0)
    old_ctx = rs["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    wavelen = 2 * math.pi / inv
    scaled = np.where(wavelen > low_wavelen, inv / factor, inv)
    smooth = (old_ctx / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def rope_cos_sin(positions: jax.Array, cfg: ModelConfig):
    """positions [B, T] int -> (cos, sin) each [B, T, head_dim] f32 (halves duplicated, HF layout)."""
    inv = jnp.asarray(rope_inv_freq(cfg))
    freqs = positions.astype(F32)[..., None] * inv
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x, cos, sin):
    """x [B, T, N, D]; rotate-half convention of transformers (not llama.cpp's interleaved one)."""
    xf = x.astype(F32)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-xf[..., half:], xf[..., :half]], axis=-1)
    return (xf * cos[:, :, None] + rotated * sin[:, :, None]).astype(x.dtype)


# ----------------------------------------------------------------------------- attention
class Attention(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x, cos, sin, mask, layer_cache=None, cache_index=None):
        """x [B,T,E]; mask [B,T,S] bool; layer_cache (k, v) each [B,S,K,D] or None.

        Returns (out [B,T,E], (k, v) of the T new tokens [B,T,K,D] when a cache is given).
        With a cache the new tokens sit at slots [cache_index, cache_index+T): they attend to the
        cache's older slots and to each other, but the cache itself is only *read* here — the
        caller writes all layers' new keys at once after the layer scan (updating a stacked
        cache inside the scan makes XLA copy the whole cache every layer: 30x slower decoding).
        """
        cfg, dt = self.cfg, self.cfg.dtype
        e, h, k_, d = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        init = nn.initializers.normal(0.02)
        wq = _weight(self, "q_proj", (e, h, d), ("embed", "heads", "head_dim"), init, cfg)
        wk = _weight(self, "k_proj", (e, k_, d), ("embed", "kv_heads", "head_dim"), init, cfg)
        wv = _weight(self, "v_proj", (e, k_, d), ("embed", "kv_heads", "head_dim"), init, cfg)
        wo = _weight(self, "o_proj", (h, d, e), ("heads", "head_dim", "embed"), init, cfg)
        q = dense(x, wq, "bte,ehd->bthd", dt)
        k = dense(x, wk, "bte,ehd->bthd", dt)
        v = dense(x, wv, "bte,ehd->bthd", dt)
        if cfg.qkv_bias:
            zeros = nn.initializers.zeros
            q = q + _param(self, "q_bias", (h, d), ("heads", "head_dim"), zeros, cfg).astype(dt)
            k = k + _param(self, "k_bias", (k_, d), ("kv_heads", "head_dim"), zeros, cfg).astype(dt)
            v = v + _param(self, "v_bias", (k_, d), ("kv_heads", "head_dim"), zeros, cfg).astype(dt)
        q = nn.with_logical_constraint(apply_rope(q, cos, sin), ("batch", "length", "act_heads", "head_dim"))
        k = apply_rope(k, cos, sin)

        b, t = x.shape[:2]
        qg = q.reshape(b, t, k_, h // k_, d) / np.sqrt(d).astype(dt)  # G query heads per KV head
        if layer_cache is None:
            out = _attend([(qg, k, v, mask)], dt)
            new_kv = None
        else:
            ck, cv = layer_cache
            s = ck.shape[1]
            # Older slots come from the cache; the T new tokens' own keys from k, v.
            old = mask & (jnp.arange(s) < cache_index)[None, None, :]
            own = jax.lax.dynamic_slice_in_dim(mask, cache_index, t, axis=2)
            out = _attend([(qg, ck.astype(dt), cv.astype(dt), old), (qg, k, v, own)], dt)
            new_kv = (k.astype(ck.dtype), v.astype(cv.dtype))
        out = out.reshape(b, t, h, d)
        return dense(out, wo, "bthd,hde->bte", dt), new_kv


def _attend(blocks, dt):
    """Softmax attention over the concatenation of key blocks, without concatenating keys.

    blocks: [(q [B,T,K,G,D] (pre-scaled), k [B,S_i,K,D], v [B,S_i,K,D], mask [B,T,S_i]), ...].
    Returns [B,T,K,G,D]. Logits and softmax in f32.
    """
    logits = [jnp.where(m[:, None, None], jnp.einsum("btkgd,bskd->bkgts", q, k_, preferred_element_type=F32),
                        jnp.finfo(F32).min) for q, k_, _, m in blocks]
    probs = jax.nn.softmax(jnp.concatenate(logits, axis=-1), axis=-1).astype(dt)
    out, start = 0.0, 0
    for (_, _, v, _), lg in zip(blocks, logits):
        p = jax.lax.slice_in_dim(probs, start, start + lg.shape[-1], axis=-1)
        out = out + jnp.einsum("bkgts,bskd->btkgd", p, v, preferred_element_type=F32)
        start += lg.shape[-1]
    return out.astype(dt)


class MLP(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x):
        cfg, dt = self.cfg, self.cfg.dtype
        e, f = cfg.hidden_size, cfg.intermediate_size
        init = nn.initializers.normal(0.02)
        gate = _weight(self, "gate_proj", (e, f), ("embed", "mlp"), init, cfg)
        up = _weight(self, "up_proj", (e, f), ("embed", "mlp"), init, cfg)
        down = _weight(self, "down_proj", (f, e), ("mlp", "embed"), init, cfg)
        g = dense(x, gate, "bte,ef->btf", dt)
        u = dense(x, up, "bte,ef->btf", dt)
        hmid = (jax.nn.silu(g.astype(F32)) * u.astype(F32)).astype(dt)
        hmid = nn.with_logical_constraint(hmid, ("batch", "length", "act_mlp"))
        return dense(hmid, down, "btf,fe->bte", dt)


class DecoderLayer(nn.Module):
    """Pre-norm block. Signature fits `nn.scan`: (carry, *broadcast, scanned) -> (carry, out)."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x, cos, sin, mask, cache_index, layer_cache):
        attn_out, new_cache = Attention(self.cfg, name="attn")(
            RMSNorm(self.cfg, name="attn_norm")(x), cos, sin, mask, layer_cache, cache_index)
        x = x + attn_out
        x = x + MLP(self.cfg, name="mlp")(RMSNorm(self.cfg, name="mlp_norm")(x))
        x = nn.with_logical_constraint(x, ("batch", "length", "act_embed"))
        return x, new_cache
