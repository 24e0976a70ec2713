"""The decode forward: prefill chunks and one-token steps over an explicit per-layer KV cache, on
the layer code of `layers.py` with a decode-time weight layout.

Why not `Transformer.apply` with a stacked cache: scanning the layers with the cache [L, B, S, K, D]
as scan input and output copies the whole cache every step (measured in docs/benchmarks.md).
Here instead:

* the layers are unrolled over per-layer weights prepared once per params (`prepare_weights`), and
  each layer's cache is its own loop-carried buffer, so writing one slot is an in-place update of
  that buffer and nothing else is copied (one traced layer program, `_layer`, called per layer and
  inlined by XLA);
* keys are stored [N, K, D, S] (slots minor) and values [N, K, S, D]: both attention products
  become plain batched matrix products;
* q/k/v and gate/up are fused into one matrix each (fewer, larger matmuls), stored [in, out] (the
  head [V, E]), the layout XLA:CPU's dots read without a transpose (`prepare_weights`);
* on CPU the cache is float32 (`storage_dtype`): XLA:CPU upcasts a bf16 dynamic-update-slice to
  f32 and copies the whole buffer twice per write.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxevo.models.config import ModelConfig
from jaxevo.models.layers import F32, attend_masked, decoder_layer, embed, product, rms_norm, softcap
from jaxevo.models.transformer import layer_inputs, lm_head_weight


SCORES = ("dot", "reduce")  # the ways a decode step forms its attention scores (`attend_cache`)


class Cache(NamedTuple):
    """Per-layer tuples: k[l] [N, K, D, S] (slot axis minor), v[l] [N, K, S, D]."""

    k: tuple
    v: tuple


def storage_dtype(cfg: ModelConfig, platform: str | None = None) -> jnp.dtype:
    """The cache's dtype: the compute dtype, except float32 on CPU, where XLA upcasts a bf16
    dynamic-update-slice to f32 and turns each one-slot write into full copies of the layer's
    cache; nor would halving the bytes pay there without the copies (docs/benchmarks.md). The
    values stored are the compute-dtype keys/values, so the arithmetic is unchanged."""
    platform = platform or jax.devices()[0].platform
    return jnp.dtype(jnp.float32) if platform == "cpu" else jnp.dtype(cfg.dtype)


def prepare_weights(params, cfg: ModelConfig, matmul_dtype=None, embedding_bits: bool | None = None) -> dict:
    """The decode layout of `params`, made once per params: per layer {"attn_norm", "mlp_norm"
    (and any other norm, as stored), "attn": {"qkv" [E, (H + 2K) D], "qkv_bias" [(H + 2K) D],
    "o" [H D, E], "q_norm", "k_norm" [D]},
    "mlp": {"gate_up" [E, 2F], "down" [F, E]}}, plus "embedding" [V, E] (as its bit patterns with
    `embedding_bits`, by default where JAX's default backend is the CPU; see `_embedding_bits`),
    "final_norm" and "lm_head" [V, E]. The layers' matrices are [in, out], the layout XLA:CPU's
    YNNPACK dots read (stored [out, in], every call of a decode program transposed them all again;
    docs/benchmarks.md); the head stays [V, E], which its dot reads as it is. Matrices are rounded
    to the compute dtype and stored in `matmul_dtype` (default: the compute dtype). Storing
    bf16-rounded weights as float32 gives the same products (bf16 x bf16 is exact in f32, the
    accumulation is f32 either way) through a different kernel, the faster one at batch 1 on CPUs
    without native bf16 dots.

    One small program per layer, called for each layer index, and one for the head: a single
    program over all layers took seconds to compile, once per params dtype (loaded and trained
    params differ). Traceable: `jax.jit(prepare_weights, static_argnames=("cfg", "matmul_dtype"))`
    is the whole layout as one program (`jaxevo plan` lowers it so)."""
    layers = [_prepare_layer(params["layers"], i, cfg=cfg, matmul_dtype=matmul_dtype)
              for i in range(cfg.num_layers)]
    bits = jax.default_backend() == "cpu" if embedding_bits is None else embedding_bits
    return {"layers": layers, **_prepare_head({k: v for k, v in params.items() if k != "layers"},
                                              cfg=cfg, matmul_dtype=matmul_dtype, bits=bits)}


def _rounded(x, cfg: ModelConfig, matmul_dtype):
    """x rounded to the compute dtype, stored in `matmul_dtype` (default: the compute dtype)."""
    return x.astype(cfg.dtype).astype(jnp.dtype(matmul_dtype or cfg.dtype))


@functools.partial(jax.jit, static_argnames=("cfg", "matmul_dtype"))
def _prepare_layer(stacked, i, cfg: ModelConfig, matmul_dtype=None) -> dict:
    """Layer i (int32 scalar) of the stacked layer params, in the decode layout."""
    e = cfg.hidden_size

    def w(x):
        return _rounded(x, cfg, matmul_dtype)

    p = jax.tree.map(lambda a: lax.dynamic_index_in_dim(a, i, keepdims=False), stacked)
    a, m = p["attn"], p["mlp"]
    attn = {"qkv": jnp.concatenate([w(a[n].reshape(e, -1)) for n in ("q_proj", "k_proj", "v_proj")], 1),
            "o": w(a["o_proj"].reshape(-1, e))}
    if cfg.qkv_bias:
        attn["qkv_bias"] = jnp.concatenate([a[n].reshape(-1).astype(cfg.dtype) for n in ("q_bias", "k_bias", "v_bias")])
    attn |= {n: a[n] for n in ("q_norm", "k_norm") if n in a}
    norms = {n: v for n, v in p.items() if n.endswith("_norm")}
    return {**norms, "attn": attn,
            "mlp": {"gate_up": jnp.concatenate([w(m["gate_proj"]), w(m["up_proj"])], 1),
                    "down": w(m["down_proj"])}}


@functools.partial(jax.jit, static_argnames=("cfg", "matmul_dtype", "bits"))
def _prepare_head(params, cfg: ModelConfig, matmul_dtype=None, bits: bool = True) -> dict:
    """The embedding, final norm and lm_head [V, E] in the decode layout (params without "layers")."""
    embedding = _embedding_bits(params["embedding"], cfg) if bits else params["embedding"]
    return {"final_norm": params["final_norm"], "embedding": embedding,
            "lm_head": _rounded(lm_head_weight(params, cfg), cfg, matmul_dtype).T}


def _embedding_bits(table, cfg: ModelConfig):
    """The embedding as the decode layout keeps it: rounded to the compute dtype (the lookup rounds
    its rows so anyway) and, when that dtype is 16-bit, stored as its uint16 bit patterns. XLA:CPU
    gathers rows of a bf16 table by widening the whole table to f32 first, in every call of a
    decode program; rows of a uint16 table it gathers as they are (and a bitcast of the bf16
    table inside the program would be a whole copy too). Accelerators gather bf16 rows as they
    are, and there the params' own table needs no second copy."""
    table = table.astype(cfg.dtype)
    return lax.bitcast_convert_type(table, jnp.uint16) if table.dtype.itemsize == 2 else table


def _take_rows(table, tokens, axis=0, *, dtype):
    """Rows of a table made by `_embedding_bits`, in `dtype` (the compute dtype)."""
    rows = jnp.take(table, tokens, axis=axis)
    return lax.bitcast_convert_type(rows, dtype) if rows.dtype == jnp.uint16 else rows


def init_cache(cfg: ModelConfig, n: int, s: int, dtype=None) -> Cache:
    """Zeroed cache for n rows and s slots (dtype: `storage_dtype` unless given)."""
    dt = jnp.dtype(dtype) if dtype is not None else storage_dtype(cfg)
    k, d = cfg.num_kv_heads, cfg.head_dim
    return Cache(tuple(jnp.zeros((n, k, d, s), dt) for _ in range(cfg.num_layers)),
                 tuple(jnp.zeros((n, k, s, d), dt) for _ in range(cfg.num_layers)))


def write_slots(ck, cv, k, v, slot):
    """Write T new keys/values k, v [N, T, K, D] into one layer's cache ck [N, K, D, S],
    cv [N, K, S, D] at slots [slot, slot + T) (slot: int32 scalar, or [N] per row). Returns
    (ck, cv); in place when the buffers are donated loop carries."""
    k, v = k.transpose(0, 2, 3, 1).astype(ck.dtype), v.transpose(0, 2, 1, 3).astype(cv.dtype)
    if jnp.ndim(slot) == 0:  # one slot for every row
        return (lax.dynamic_update_slice(ck, k, (0, 0, 0, slot)),
                lax.dynamic_update_slice(cv, v, (0, 0, slot, 0)))
    # a slot per row [N] (continuous batching: rows started at different steps)
    return (jax.vmap(lambda c, x, o: lax.dynamic_update_slice(c, x, (0, 0, o)))(ck, k, slot),
            jax.vmap(lambda c, x, o: lax.dynamic_update_slice(c, x, (0, o, 0)))(cv, v, slot))


def attend_cache(cfg: ModelConfig, q, ck, cv, visible, scores: str = "dot"):
    """Grouped-query attention of T new queries per row over the cache (their own slots already
    written): q [N, T, H, D] (RoPE applied); ck [N, K, D, S], cv [N, K, S, D]; visible [N, T, S]
    bool. Returns [N, T, H, D] in the compute dtype. Operands in the cache's dtype (exact products
    of compute-dtype values), accumulation and softmax in f32. scores (one of SCORES): how a
    decode step (T = 1) forms q.k, as N x K batched [G, D] @ [D, S] products ("dot") or as
    elementwise products summed over D ("reduce"), which XLA:CPU runs as one loop vectorised
    over the slots; which is faster depends on the CPU (`sampling.cpu_choice` measures it)."""
    dt = cfg.dtype
    n, t, h, d = q.shape
    kh = cfg.num_kv_heads
    qg = q.reshape(n, t, kh, h // kh, d).astype(ck.dtype)
    if t == 1 and scores == "reduce":
        logits = jnp.sum(qg[:, 0, ..., None].astype(F32) * ck[:, :, None].astype(F32), axis=3)
        mask = visible[:, None]
    elif t == 1:  # decode: one query per row; plain batched matrix products
        logits = jnp.einsum("bkgd,bkds->bkgs", qg[:, 0], ck, preferred_element_type=F32)
        mask = visible[:, None]
    else:
        logits = jnp.einsum("btkgd,bkds->bkgts", qg, ck, preferred_element_type=F32)
        mask = visible[:, None, None]
    logits = jnp.where(mask, softcap(logits * cfg.attn_scale, cfg.attn_logit_softcap), jnp.finfo(F32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(dt).astype(cv.dtype)
    if t == 1:
        out = jnp.einsum("bkgs,bksd->bkgd", probs, cv, preferred_element_type=F32)[:, None]
    else:
        out = jnp.einsum("bkgts,bksd->btkgd", probs, cv, preferred_element_type=F32)
    return out.astype(dt).reshape(n, t, h, d)


def forward(cfg: ModelConfig, weights: dict, cache: Cache, tokens, positions, slot, visible,
            constrain=lambda c: c, scores: str = "dot", pack=None):
    """tokens, positions [N, T] int32 -> (final-normed hidden [N, T, E], cache). The tokens'
    keys/values go to slots [slot, slot + T) (slot: int32 scalar, or [N] per row); visible
    [N, T, S] bool marks what each query attends to (its own slot included). `weights` from
    `prepare_weights`; `constrain(cache)` places the updated cache (sharding); scores: see
    `attend_cache`. Sliding-window layers narrow `visible` to their window themselves.

    pack (prompts prefilled whole, T = S): (pack [P] int32, unpack_at [N x T] int32) of
    `sampling.prefill_pack`: the flat indices into N x T of the tokens to run (padded with
    N x T), and for each slot the entry of pack holding its token. The per-token work
    (projections, MLP, norms) then runs on those P rows only, not on the padding nor on a prefix
    two prompts share; the attention over [N, T] as before. Returns hidden [R, P / R, E] in pack's
    order (R = N where it divides P, else 1; padding entries repeat the last token) and the
    cache, whose padding slots hold some real token's keys and values (masked, as the padding
    tokens' own were)."""
    take = functools.partial(_take_rows, dtype=cfg.dtype)
    unpack_at = None
    if pack is not None:  # gathers both ways: XLA:CPU's scatters run row by row
        pack, unpack_at = pack
        # [N, P / N]: YNNPACK's dots (norms fused in) split their work over the leading dim
        rows = tokens.shape[0] if pack.shape[0] % tokens.shape[0] == 0 else 1
        tokens, positions = (jnp.take(a.reshape(-1), pack, mode="clip").reshape(rows, -1) for a in (tokens, positions))
    x = embed(cfg, weights["embedding"], tokens, take=take)  # [N, T, E] ([R, P / R, E] packed)
    query_slots = jnp.reshape(slot, (-1, 1)) + jnp.arange(visible.shape[1])  # [N or 1, T]
    ropes, masks = layer_inputs(cfg, positions, visible, query_slots)
    ks, vs = list(cache.k), list(cache.v)
    # The tokens fill the whole cache (a prompt prefilled in one pass): their own keys and values
    # are all there is to attend to, in the compute dtype as the training forward has them, which
    # spares XLA:CPU the f32 copies and transposes of the queries that the cache layout costs.
    whole = visible.shape[1] == cache.k[0].shape[-1]
    for i, (w, sliding) in enumerate(zip(weights["layers"], cfg.sliding_layers)):
        x, ks[i], vs[i] = _layer(cfg, w, x, *ropes[sliding], ks[i], vs[i], slot, masks[sliding], pack,
                                 unpack_at, whole=whole, scores=scores)
    return rms_norm(cfg, weights["final_norm"], x), constrain(Cache(tuple(ks), tuple(vs)))


@functools.partial(jax.jit, static_argnums=0, static_argnames=("whole", "scores"))
def _layer(cfg: ModelConfig, w, x, cos, sin, ck, cv, slot, mask, pack, unpack_at, *, whole: bool,
           scores: str):
    """One layer of `forward`: (x, ck, cv) after it. A program of its own, inlined by XLA into the
    caller: tracing it once for all the layers of a forward (they share shapes) takes a fraction
    of the Python time of tracing each, which every process paid for every decode program."""
    n, t = mask.shape[:2]

    def unpack(a):  # [R, P / R, ...] -> [N, T, ...]; the padding slots get some real row (masked)
        return jnp.take(a.reshape(-1, *a.shape[2:]), unpack_at, axis=0, mode="clip").reshape(n, t, *a.shape[2:])

    def attend(q, k, v):
        if pack is not None:
            q, k, v = unpack(q), unpack(k), unpack(v)
        ck2, cv2 = write_slots(ck, cv, k, v, slot)
        if not whole:
            return attend_cache(cfg, q, ck2, cv2, mask, scores), (ck2, cv2)
        out = attend_masked(cfg, q, k, v, mask, heads_first=True)
        if pack is not None:
            out = jnp.take(out.reshape(n * t, *out.shape[2:]), pack, axis=0, mode="clip")
            out = out.reshape(x.shape[:2] + out.shape[1:])
        return out, (ck2, cv2)

    x, (ck, cv) = decoder_layer(cfg, w, x, cos, sin, attend)
    return x, ck, cv


def logits(cfg: ModelConfig, weights: dict, hidden):
    """hidden [..., E] -> f32 logits [..., V] (compute-dtype inputs, f32 accumulation,
    soft-capped if the model says so)."""
    return softcap(product(hidden, weights["lm_head"], "...i,oi->...o", cfg.dtype),  # lm_head [V, E]
                   cfg.final_logit_softcap)


def decode_step(cfg: ModelConfig, weights: dict, cache: Cache, tokens, positions, slot, visible,
                constrain=lambda c: c, scores: str = "dot"):
    """One token per row: tokens, positions [N], visible [N, S] -> (logits [N, V] f32, cache)."""
    h, cache = forward(cfg, weights, cache, tokens[:, None], positions[:, None], slot,
                       visible[:, None], constrain, scores)
    return logits(cfg, weights, h[:, 0]), cache
