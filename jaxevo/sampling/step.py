"""The sampler's forward pass (prefill chunks and one-token decode steps) over a per-layer KV
cache in a layout fit for decoding.

Why not `Transformer.apply(..., cache=...)`: measured on the shared 2-core CPU (SmolLM2-135M,
64 rows, bf16, 112 cache slots), that path cost ~1.4 s per decode step against ~0.5 s for the same
forward without a cache: the model scans its layers with the stacked cache [L, B, S, K, D] as scan
input and output, so every step copies the whole cache (a bare `lax.scan` doing the same per-layer
dynamic-update-slices: ~0.75 s per step), and its attention einsum over [B, S, K, D] ran at
~4 GFLOP/s. Here instead:

* the layers are unrolled over per-layer weights prepared once per params (`prepare_weights`), and
  each layer's cache is its own loop-carried buffer, so writing one slot is an in-place update of
  that buffer and nothing else is copied;
* keys are stored [N, K, D, S] (slots minor) and values [N, K, S, D]: both attention products
  become plain batched matrix products (~2.6x faster than the model's layout on that CPU);
* q/k/v and gate/up are fused into one matrix each (fewer, larger matmuls);
* on CPU the cache is float32 (`storage_dtype`): XLA:CPU upcasts a bf16 dynamic-update-slice to
  f32 and copies the whole buffer twice per write.

The arithmetic is the model's: `RMSNorm`, `apply_rope`, `rope_cos_sin` from `jaxevo.models.layers`
and the same dtype recipe (compute-dtype matmul operands, f32 accumulation, f32 norms / RoPE /
softmax, compute-dtype activations). Tests hold it to the model's teacher-forced log-probs
(<= 1e-4, f32) and to transformers' greedy tokens.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxevo.models.config import ModelConfig
from jaxevo.models.layers import F32, RMSNorm, apply_rope, rope_cos_sin


class Cache(NamedTuple):
    """Per-layer tuples: k[l] [N, K, D, S] (slot axis minor), v[l] [N, K, S, D]."""

    k: tuple
    v: tuple


def storage_dtype(cfg: ModelConfig, platform: str | None = None) -> jnp.dtype:
    """The cache's dtype: the compute dtype, except float32 on CPU. XLA's CPU backend upcasts a
    bf16 dynamic-update-slice to f32 (and a uint16 bit-cast store gets duplicated into the readers'
    fusions), which turns each one-slot write into full copies of the layer's cache: measured
    ~80-90 ms against ~40 ms per step for 30 layers' key updates + reads at 64 x 112 slots. Nor
    would halving the bytes pay there without the copies: read-only bf16 attention is no faster
    than f32 (`benchmarks/decode_attention.py`). The values stored are the compute-dtype
    keys/values, so the arithmetic is unchanged."""
    platform = platform or jax.devices()[0].platform
    return jnp.dtype(jnp.float32) if platform == "cpu" else jnp.dtype(cfg.dtype)


def prepare_weights(params, cfg: ModelConfig, matmul_dtype=None) -> dict:
    """The decode/prefill weights, made once per params (the Sampler caches them).

    Per layer, q/k/v are fused into one [(H + 2K) D, E] matrix and gate/up into one [2F, E]
    (fewer, larger matmuls: the fused q/k/v product runs ~1.5x faster at 64 rows on the CPU).
    Every matrix is stored [out, in], the contraction on its minor axis (a tied output projection
    is then the embedding itself). On the 2-core CPU, XLA's dot is a little faster on that layout
    than on the model's [in, out]: a step's matmuls at 64 rows took 83-87 against 94-103 ms, a
    decode step 180 against 194 ms at 64 rows and 26 against 31 ms at 1 row (best of 10). End to
    end the gain is within that machine's noise. Matrices are rounded to the compute dtype and
    stored in `matmul_dtype` (default: the compute dtype). Storing
    bf16-rounded weights as float32 gives the same products (bf16 x bf16 is exact in f32, and the
    accumulation is f32 either way) through a different kernel: XLA:CPU's f32 matrix-vector path
    is the faster one at batch 1."""
    dt = jnp.dtype(cfg.dtype)
    mm = jnp.dtype(matmul_dtype or dt)
    e = cfg.hidden_size

    def w(x):
        return x.astype(dt).astype(mm)

    layers = []
    for i in range(cfg.num_layers):
        p = jax.tree.map(lambda a, i=i: a[i], params["layers"])
        a = p["attn"]
        lw = {
            "attn_norm": p["attn_norm"],
            "mlp_norm": p["mlp_norm"],
            "qkv": jnp.concatenate([w(a[n].reshape(e, -1)) for n in ("q_proj", "k_proj", "v_proj")], 1).T,
            "o": w(a["o_proj"].reshape(-1, e)).T,
            "gate_up": jnp.concatenate([w(p["mlp"]["gate_proj"]), w(p["mlp"]["up_proj"])], 1).T,
            "down": w(p["mlp"]["down_proj"]).T,
        }
        if cfg.qkv_bias:
            lw["qkv_bias"] = jnp.concatenate([a[n].reshape(-1).astype(dt) for n in ("q_bias", "k_bias", "v_bias")])
        layers.append(lw)
    from jaxevo.models.transformer import lm_head_weight

    return {"layers": layers, "final_norm": params["final_norm"], "embedding": params["embedding"],
            "lm_head": w(lm_head_weight(params, cfg)).T}


def _product(x, w, dt):
    """x [..., in] @ w [out, in] -> f32 [..., out]: compute-dtype operands (stored in the weight's
    dtype, see `prepare_weights`), f32 accumulation."""
    return jnp.einsum("...i,oi->...o", x.astype(dt).astype(w.dtype), w, preferred_element_type=F32)


def _dense(x, w, dt):
    """The model's `dense`: `_product` with a compute-dtype result."""
    return _product(x, w, dt).astype(dt)


def init_cache(cfg: ModelConfig, n: int, s: int, dtype=None) -> Cache:
    """Zeroed cache for n rows and s slots (dtype: `storage_dtype` unless given)."""
    dt = jnp.dtype(dtype) if dtype is not None else storage_dtype(cfg)
    k, d = cfg.num_kv_heads, cfg.head_dim
    return Cache(tuple(jnp.zeros((n, k, d, s), dt) for _ in range(cfg.num_layers)),
                 tuple(jnp.zeros((n, k, s, d), dt) for _ in range(cfg.num_layers)))


def copy_rows(cfg: ModelConfig, cache: Cache, prompt_cache: Cache, rows) -> Cache:
    """Slots [0, T) of the N rows of `cache` from the P-row `prompt_cache` (row r <- rows[r])."""
    ks = tuple(lax.dynamic_update_slice(c, jnp.take(p, rows, axis=0).astype(c.dtype), (0, 0, 0, 0))
               for c, p in zip(cache.k, prompt_cache.k))
    vs = tuple(lax.dynamic_update_slice(c, jnp.take(p, rows, axis=0).astype(c.dtype), (0, 0, 0, 0))
               for c, p in zip(cache.v, prompt_cache.v))
    return Cache(ks, vs)


def _attention(cfg: ModelConfig, w, x, cos, sin, ck, cv, slot, visible):
    """One layer's attention for T new tokens per row. x [N, T, E]; ck [N, K, D, S], cv [N, K, S, D];
    the tokens' keys/values are written at slots [slot, slot + T) first; visible [N, T, S] bool.
    Returns (out [N, T, E], ck, cv)."""
    dt = cfg.dtype
    h, kh, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    n, t, _ = x.shape
    qkv = _dense(x, w["qkv"], dt)
    if cfg.qkv_bias:
        qkv = qkv + w["qkv_bias"]
    q = apply_rope(qkv[..., :h * d].reshape(n, t, h, d), cos, sin)
    k = apply_rope(qkv[..., h * d:(h + kh) * d].reshape(n, t, kh, d), cos, sin)
    v = qkv[..., (h + kh) * d:].reshape(n, t, kh, d)
    ck, cv = write_slots(ck, cv, k, v, slot)
    out = attend(cfg, q, ck, cv, visible)
    return _dense(out, w["o"], dt), ck, cv


def write_slots(ck, cv, k, v, slot):
    """Write T new keys/values k, v [N, T, K, D] into one layer's cache ck [N, K, D, S],
    cv [N, K, S, D] at slots [slot, slot + T) (slot: int32 scalar, or [N] per row). Returns
    (ck, cv); in place when the buffers are donated loop carries."""
    k, v = k.transpose(0, 2, 3, 1).astype(ck.dtype), v.transpose(0, 2, 1, 3).astype(cv.dtype)
    if jnp.ndim(slot) == 0:  # one slot for every row
        return (lax.dynamic_update_slice(ck, k, (0, 0, 0, slot)),
                lax.dynamic_update_slice(cv, v, (0, 0, slot, 0)))
    # a slot per row [N] (speculative decoding: rows advance by different amounts)
    return (jax.vmap(lambda c, x, o: lax.dynamic_update_slice(c, x, (0, 0, o)))(ck, k, slot),
            jax.vmap(lambda c, x, o: lax.dynamic_update_slice(c, x, (0, o, 0)))(cv, v, slot))


def attend(cfg: ModelConfig, q, ck, cv, visible):
    """Grouped-query attention of T new queries per row over the cache (their own slots already
    written): q [N, T, H, D] (RoPE applied); ck [N, K, D, S], cv [N, K, S, D]; visible [N, T, S]
    bool. Returns [N, T, H * D] in the compute dtype.

    Operands are in the cache's dtype (exact products of compute-dtype values), accumulation and
    softmax in f32; G = H / K query heads share a KV head."""
    dt = cfg.dtype
    n, t, h, d = q.shape
    kh = cfg.num_kv_heads
    qg = q.reshape(n, t, kh, h // kh, d).astype(ck.dtype)
    mask = visible[:, None, None] if t > 1 else visible[:, None]
    if t == 1:  # decode: one query per row; plain batched matrix products
        logits = jnp.einsum("bkgd,bkds->bkgs", qg[:, 0], ck, preferred_element_type=F32)
    else:
        logits = jnp.einsum("btkgd,bkds->bkgts", qg, ck, preferred_element_type=F32)
    logits = jnp.where(mask, logits / np.sqrt(d), jnp.finfo(F32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(dt).astype(cv.dtype)
    if t == 1:
        out = jnp.einsum("bkgs,bksd->bkgd", probs, cv, preferred_element_type=F32)[:, None]
    else:
        out = jnp.einsum("bkgts,bksd->btkgd", probs, cv, preferred_element_type=F32)
    return out.astype(dt).reshape(n, t, h * d)


def _mlp(cfg: ModelConfig, w, x):
    """The model's SwiGLU MLP (`jaxevo.models.layers.MLP`) with gate/up fused."""
    dt = cfg.dtype
    gu = _dense(x, w["gate_up"], dt)
    f = cfg.intermediate_size
    hmid = (jax.nn.silu(gu[..., :f].astype(F32)) * gu[..., f:].astype(F32)).astype(dt)
    return _dense(hmid, w["down"], dt)


def forward(cfg: ModelConfig, weights: dict, cache: Cache, tokens, positions, slot, visible,
            constrain=lambda c: c):
    """tokens, positions [N, T] int32 -> (final-normed hidden [N, T, E], cache). The tokens'
    keys/values go to slots [slot, slot + T) (slot: int32 scalar, or [N] per row); visible
    [N, T, S] bool marks what each query attends to (its own slot included). `weights` from
    `prepare_weights`."""
    dt = cfg.dtype
    x = jnp.take(weights["embedding"], tokens, axis=0).astype(dt)  # [N, T, E]
    cos, sin = rope_cos_sin(positions, cfg)  # [N, T, D]
    norm = RMSNorm(cfg)
    ks, vs = list(cache.k), list(cache.v)
    for i, w in enumerate(weights["layers"]):
        a, ks[i], vs[i] = _attention(cfg, w, norm.apply({"params": w["attn_norm"]}, x), cos, sin,
                                     ks[i], vs[i], slot, visible)
        x = x + a
        x = x + _mlp(cfg, w, norm.apply({"params": w["mlp_norm"]}, x))
    return norm.apply({"params": weights["final_norm"]}, x), constrain(Cache(tuple(ks), tuple(vs)))


def logits(cfg: ModelConfig, weights: dict, hidden):
    """hidden [..., E] -> f32 logits [..., V] (compute-dtype inputs, f32 accumulation)."""
    return _product(hidden, weights["lm_head"], cfg.dtype)  # lm_head [V, E]


def decode_step(cfg: ModelConfig, weights: dict, cache: Cache, tokens, positions, slot, visible,
                constrain=lambda c: c):
    """One token per row: tokens, positions [N], visible [N, S] -> (logits [N, V] f32, cache)."""
    h, cache = forward(cfg, weights, cache, tokens[:, None], positions[:, None], slot,
                       visible[:, None], constrain)
    return logits(cfg, weights, h[:, 0]), cache
