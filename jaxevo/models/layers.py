"""The decoder's arithmetic, written once: embedding, RMSNorm, RoPE, q/k/v projection (with an
optional q/k norm), attention (with optional soft-capping), the gated MLP (SwiGLU or GeGLU), and
the block that chains them (pre-norm, or Gemma's pre- and post-norm "sandwich"). Pure functions
over one layer's weights dict; the training forward (`transformer.py`) and the decode forward
(`decode.py`) both call them. Which features a model uses is read from its `ModelConfig`.

A layer's weights come in one of two layouts, both made from the same params:
* the model's (training): {"attn_norm": {"scale"}, "attn": {"q_proj" [E, H, D], "k_proj",
  "v_proj" [E, K, D], "o_proj" [H, D, E], "q_bias" ..., "q_norm", "k_norm" [D]}, "mlp_norm",
  "mlp": {"gate_proj", "up_proj" [E, F], "down_proj" [F, E]}, and with sandwich norms
  "attn_post_norm", "mlp_post_norm"};
* the decode one (`decode.prepare_weights`): "attn": {"qkv" [E, (H + 2K) D], "qkv_bias", "o" [H D, E],
  "q_norm", "k_norm"}, "mlp": {"gate_up" [E, 2F], "down" [F, E]}: fused, stored [in, out].

Dtype recipe (DESIGN.md): matmul operands in the compute `cfg.dtype` (the weights arrive already
cast), f32 accumulation (`preferred_element_type`), norms, RoPE and softmax in f32, activations in
the compute dtype (the recipe that makes XLA's bf16 dot fast on CPU; docs/benchmarks.md). Products
go through `matmul.einsum_f32`, so the backward pass keeps to the same recipe.
"""

from __future__ import annotations

import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

from jaxevo.models.config import ModelConfig
from jaxevo.models.lowrank import ADAPTED_OUTPUT, Adapted, adapter_product
from jaxevo.models.matmul import einsum_f32

F32 = jnp.float32


def no_constraint(x, axes):
    """The `constrain(x, logical_axes)` of a forward without sharding annotations (decoding)."""
    return x


def gathered(w, axes, dtype):
    """A matmul weight as used: cast to `dtype`, constrained to its sharding with `embed` (the fsdp
    axis) replicated, i.e. all-gathered just before its matmul (ZeRO-3).

    Without it XLA's SPMD partitioner may keep the weight sharded on the contracting dim and
    compute partial products for the WHOLE batch on every device, then all-reduce them: tens of GB
    of temporaries per chip for Llama-3.1-8B on v5e-64 (docs/scaling.md). A no-op without a mesh."""
    return nn.with_logical_constraint(w.astype(dtype), tuple(None if a == "embed" else a for a in axes))


# The product of the decode layout's fused matrices, stored [in, out] (`decode.prepare_weights`);
# the CPU path probe (`sampling/cpu_choice.py`) times the same form.
FUSED = "...i,io->...o"


def product(x, w, spec: str, dt) -> jax.Array:
    """einsum(spec, x, w) -> f32: x cast to the compute dtype `dt` (then to w's storage dtype, see
    `decode.prepare_weights`), w as given, f32 accumulation."""
    return einsum_f32(spec, x.astype(dt).astype(w.dtype), w)


def dense(x, w, spec: str, dt) -> jax.Array:
    """`product` with a compute-dtype result. ``w`` may be an `Adapted` projection (LoRA): the
    adapter branch is added in f32 before the one rounding."""
    if isinstance(w, Adapted):
        # Named so the dot-saving remat policies keep this sum instead of both of its dot
        # outputs (`transformer.REMAT`): the backward pass needs neither x·W nor x·A·B.
        return checkpoint_name((product(x, w.w, spec, dt) + adapter_product(x, w, spec)).astype(dt),
                               ADAPTED_OUTPUT)
    return product(x, w, spec, dt).astype(dt)


def rms_norm(cfg: ModelConfig, w, x) -> jax.Array:
    """x [..., E], w {"scale": [E]} -> [..., E] in the compute dtype (normalised in f32)."""
    return scaled_norm(cfg, w["scale"], x)


def scaled_norm(cfg: ModelConfig, scale, x) -> jax.Array:
    """RMSNorm of x [..., N] over its last axis with weight scale [N], as transformers rounds it:
    Llama-style multiplies the weight by the normalised input cast back to x's dtype; Gemma-style
    (`norm_unit_offset`) multiplies by (1 + weight) in f32 and rounds once."""
    xf = x.astype(F32)
    xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + cfg.rms_norm_eps)
    if cfg.norm_unit_offset:
        return ((1.0 + scale.astype(F32)) * xf).astype(cfg.dtype)
    return (scale.astype(F32) * xf.astype(x.dtype).astype(F32)).astype(cfg.dtype)


def embed(cfg: ModelConfig, table, tokens, take=jnp.take) -> jax.Array:
    """tokens [...] int -> [..., E] in the compute dtype; Gemma multiplies by sqrt(E) rounded to
    that dtype (as transformers does). take(table, tokens, axis=0): the row lookup."""
    x = take(table, tokens, axis=0).astype(cfg.dtype)
    if cfg.scale_embeddings:
        x = x * jnp.asarray(math.sqrt(cfg.hidden_size), cfg.dtype)
    return x


def softcap(x, cap: float | None):
    """cap * tanh(x / cap) (Gemma's logit soft-capping), or x when cap is None."""
    return x if cap is None else cap * jnp.tanh(x / cap)


# ---------------------------------------------------------------------------------- RoPE
def rope_inv_freq(cfg: ModelConfig, local: bool = False, long: bool = False) -> np.ndarray:
    """Inverse frequencies [head_dim // 2] (f32), with linear / llama3 / longrope scaling as in
    transformers. local: the sliding layers' base (`rope_local_theta`, never scaled); long: the
    longrope factors for sequences past the original context (else the short ones)."""
    d = cfg.head_dim
    theta = cfg.rope_local_theta if local and cfg.rope_local_theta else cfg.rope_theta
    exponent = np.arange(0, d, 2, dtype=np.int64).astype(np.float32) / d
    inv = (1.0 / (theta ** exponent)).astype(np.float32)
    rs = None if local else cfg.rope_scaling_dict
    if not rs:
        return inv
    kind = rs.get("rope_type", rs.get("type"))
    if kind == "longrope":
        ext = np.asarray(rs["long_factor" if long else "short_factor"], np.float32)
        return (1.0 / (ext * np.float32(theta) ** exponent)).astype(np.float32)
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


def rope_cos_sin(positions: jax.Array, cfg: ModelConfig, local: bool = False):
    """positions [B, T] int -> (cos, sin) each [B, T, head_dim] f32 (halves duplicated, HF layout).
    local: for the sliding layers (their own base). Longrope, like transformers, takes its long
    factors when the largest position of the call reaches past the original context, and scales
    cos and sin by its attention factor."""
    inv = jnp.asarray(rope_inv_freq(cfg, local))
    rs = None if local else cfg.rope_scaling_dict
    scale = 1.0
    if rs and rs.get("rope_type") == "longrope":
        long = jnp.max(positions) + 1 > rs["original_max_position_embeddings"]
        inv = jnp.where(long, jnp.asarray(rope_inv_freq(cfg, long=True)), inv)
        scale = rs["attention_factor"]
    freqs = positions.astype(F32)[..., None] * inv
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return computed_once(lambda e: (jnp.cos(e) * scale, jnp.sin(e) * scale), emb)


def computed_once(f, x):
    """f(x), made a buffer of its own on CPUs. XLA:CPU fuses an elementwise producer into each of
    its consumers, so the cos and sin of an unrolled decode forward were computed again for every
    head of every layer (`lax.optimization_barrier` does not stop it: XLA:CPU drops barriers). A
    conditional's result is a buffer; both branches are f, and the predicate is there only to be
    unknown at compile time. On accelerators plain f(x)."""
    if jax.default_backend() != "cpu":
        return f(x)
    return jax.lax.cond(jnp.isfinite(x.reshape(-1)[0]), f, f, x)


def apply_rope(x, cos, sin):
    """x [B, T, N, D]; rotate-half convention of transformers (not llama.cpp's interleaved one)."""
    xf = x.astype(F32)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-xf[..., half:], xf[..., :half]], axis=-1)
    return (xf * cos[:, :, None] + rotated * sin[:, :, None]).astype(x.dtype)


# ----------------------------------------------------------------------------- attention
def project_qkv(cfg: ModelConfig, w, x):
    """x [B, T, E] -> q [B, T, H, D], k, v [B, T, K, D] (biases added, no RoPE yet), from the
    model's separate projections or the decode layout's fused one."""
    dt, h, kh, d = cfg.dtype, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    b, t, _ = x.shape
    if "qkv" in w:
        qkv = dense(x, w["qkv"], FUSED, dt)
        if cfg.qkv_bias:
            qkv = qkv + w["qkv_bias"]
        return (qkv[..., :h * d].reshape(b, t, h, d), qkv[..., h * d:(h + kh) * d].reshape(b, t, kh, d),
                qkv[..., (h + kh) * d:].reshape(b, t, kh, d))
    q, k, v = (dense(x, w[n], "bte,ehd->bthd", dt) for n in ("q_proj", "k_proj", "v_proj"))
    if cfg.qkv_bias:
        q, k, v = q + w["q_bias"], k + w["k_bias"], v + w["v_bias"]
    return q, k, v


def attend_masked(cfg: ModelConfig, q, k, v, mask, heads_first: bool = False):
    """Grouped-query softmax attention of T queries over S keys given in full (teacher forcing).
    q [B, T, H, D] (RoPE applied), k, v [B, S, K, D], mask [B, T, S] bool -> [B, T, H, D].
    Logits and softmax in f32; G = H / K query heads share a KV head. heads_first: the heads
    moved before the tokens first ([B, K, G, T, D], [B, K, S, D]); the same values, to the order
    of the products' sums. XLA:CPU then copies rows of D where the plain form lays the queries out
    with G minor (docs/benchmarks.md); the decode forward uses it. Training keeps the plain form:
    in a gradient the backward of this one was not faster, and it rounds bf16 gradients otherwise.
    """
    dt, h, kh, d = cfg.dtype, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    b, t = q.shape[:2]
    qg = (q.reshape(b, t, kh, h // kh, d).astype(F32) * cfg.attn_scale).astype(dt)
    if heads_first:
        logits = einsum_f32("bkgtd,bksd->bkgts", qg.transpose(0, 2, 3, 1, 4), k.transpose(0, 2, 1, 3))
    else:
        logits = einsum_f32("btkgd,bskd->bkgts", qg, k)
    logits = softcap(logits, cfg.attn_logit_softcap)
    logits = jnp.where(mask[:, None, None], logits, jnp.finfo(F32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(dt)
    if heads_first:
        out = einsum_f32("bkgts,bksd->bkgtd", probs, v.transpose(0, 2, 1, 3)).transpose(0, 3, 1, 2, 4)
    else:
        out = einsum_f32("bkgts,bskd->btkgd", probs, v)
    return out.astype(dt).reshape(b, t, h, d)


def attn_out(cfg: ModelConfig, w, out):
    """out [B, T, H, D] -> [B, T, E] through o_proj (either layout)."""
    b, t = out.shape[:2]
    if "o" in w:
        return dense(out.reshape(b, t, -1), w["o"], FUSED, cfg.dtype)
    return dense(out, w["o_proj"], "bthd,hde->bte", cfg.dtype)


def mlp(cfg: ModelConfig, w, x, constrain=no_constraint):
    """Gated MLP, SwiGLU or GeGLU (`hidden_act`): x [B, T, E] -> [B, T, E] (gate/up separate or
    fused)."""
    dt, f = cfg.dtype, cfg.intermediate_size
    if "gate_up" in w:
        gu = dense(x, w["gate_up"], FUSED, dt)
        g, u = gu[..., :f], gu[..., f:]
    else:
        g, u = dense(x, w["gate_proj"], "bte,ef->btf", dt), dense(x, w["up_proj"], "bte,ef->btf", dt)
    hmid = constrain((activation(cfg, g.astype(F32)) * u.astype(F32)).astype(dt), ("batch", "length", "act_mlp"))
    if "down" in w:
        return dense(hmid, w["down"], FUSED, dt)
    return dense(hmid, w["down_proj"], "btf,fe->bte", dt)


def activation(cfg: ModelConfig, x):
    """The MLP's gate activation in f32: SiLU, or GELU with the tanh approximation (Gemma)."""
    return jax.nn.gelu(x, approximate=True) if cfg.hidden_act == "gelu_pytorch_tanh" else jax.nn.silu(x)


Attend = Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, object]]


def decoder_layer(cfg: ModelConfig, w, x, cos, sin, attend: Attend, constrain=no_constraint):
    """One block: pre-norm, or with `sandwich_norms` also a norm on the attention and MLP outputs
    before each residual add (Gemma). x [B, T, E]; cos, sin [B, T, D] (the layer's own RoPE:
    local or global); `attend(q, k, v)` maps the RoPE'd
    q [B, T, H, D], k, v [B, T, K, D] to (out [B, T, H, D], aux) — over the given keys
    (`attend_masked`) or over a KV cache it writes them to (`decode.py`; aux is then that cache).
    constrain(x, logical_axes): sharding annotations (training), or none.
    Returns (x [B, T, E], aux)."""
    q, k, v = project_qkv(cfg, w["attn"], rms_norm(cfg, w["attn_norm"], x))
    if cfg.qk_norm:  # per head, over head_dim, before RoPE (Qwen3, Gemma 3)
        q, k = scaled_norm(cfg, w["attn"]["q_norm"], q), scaled_norm(cfg, w["attn"]["k_norm"], k)
    q = constrain(apply_rope(q, cos, sin), ("batch", "length", "act_heads", "head_dim"))
    out, aux = attend(q, apply_rope(k, cos, sin), v)
    a = attn_out(cfg, w["attn"], out)
    x = x + (rms_norm(cfg, w["attn_post_norm"], a) if cfg.sandwich_norms else a)
    m = mlp(cfg, w["mlp"], rms_norm(cfg, w["mlp_norm"], x), constrain)
    x = x + (rms_norm(cfg, w["mlp_post_norm"], m) if cfg.sandwich_norms else m)
    return constrain(x, ("batch", "length", "act_embed")), aux
