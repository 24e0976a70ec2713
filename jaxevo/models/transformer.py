"""The decoder-only transformer (every family of `config.SUPPORTED`): parameters and the
teacher-forced forward used by training.

    model = Transformer(cfg)
    params = model.init(rng, tokens, positions, mask)["params"]          # or imported weights
    logits, _ = model.apply({"params": params}, tokens, positions, mask)  # [B, T, V] f32
    hidden, _ = model.apply(..., return_hidden=True)                      # [B, T, E]

The Flax modules here only declare the parameters (names, shapes, logical axes: the tree that
checkpoints, `weights/convert.py` and `sharding.RULES` rely on) and call the layer arithmetic of
`layers.py`, which the decode forward (`decode.py`) shares. Layers are one `nn.scan` over a stacked
parameter tree (leading axis `layers`), so compile time does not grow with depth; a model mixing
sliding-window and global layers (Gemma 3) scans a per-layer flag that picks the layer's mask and
RoPE table.

Masks given to the model say which keys are real and causal (`causal_mask`, `visible_mask`); each
layer narrows them to its sliding window itself (`windowed`), so callers never look at layer types.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxevo.models.config import ModelConfig
from jaxevo.models.layers import attend_masked, decoder_layer, embed, gathered, rms_norm, rope_cos_sin, softcap
from jaxevo.models.lowrank import ADAPTED_OUTPUT, Adapted, LoraSpec
from jaxevo.models.matmul import BATCHED_PRODUCT, PRODUCT, einsum_f32
from jaxevo.models.quantized import dequantize

_CP = jax.checkpoint_policies
# The dot-saving policies also save an adapted projection's output by name: otherwise they keep
# both x·W and the adapter's x·A·B (to recompute their sum), twice a full projection's activation.
# The compute-dtype products (`matmul.einsum_f32`) hide their dot in a custom rule: saved by name.
REMAT = {
    "full": _CP.nothing_saveable,
    "dots": _CP.save_from_both_policies(
        _CP.checkpoint_dots, _CP.save_only_these_names(ADAPTED_OUTPUT, PRODUCT, BATCHED_PRODUCT)),
    "dots_no_batch": _CP.save_from_both_policies(
        _CP.checkpoint_dots_with_no_batch_dims, _CP.save_only_these_names(ADAPTED_OUTPUT, PRODUCT)),
}
NORMAL, ONES, ZEROS = nn.initializers.normal(0.02), nn.initializers.ones, nn.initializers.zeros
# Variable collections beside "params" (see `Weights`) and the rng stream of LoRA dropout.
LORA, QBASE, LORA_DROPOUT = "lora", "qbase", "lora_dropout"


def layer_param_specs(cfg: ModelConfig) -> dict:
    """{sub-layer: {name: (shape, logical axes, init)}} of one decoder layer, in creation order
    (the order fixes the random init)."""
    e, h, k, d, f = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.intermediate_size
    norm = {"scale": ((e,), ("norm",), ZEROS if cfg.norm_unit_offset else ONES)}  # Gemma: 1 + w
    attn = {"q_proj": ((e, h, d), ("embed", "heads", "head_dim"), NORMAL),
            "k_proj": ((e, k, d), ("embed", "kv_heads", "head_dim"), NORMAL),
            "v_proj": ((e, k, d), ("embed", "kv_heads", "head_dim"), NORMAL),
            "o_proj": ((h, d, e), ("heads", "head_dim", "embed"), NORMAL)}
    if cfg.qkv_bias:
        attn |= {"q_bias": ((h, d), ("heads", "head_dim"), ZEROS),
                 "k_bias": ((k, d), ("kv_heads", "head_dim"), ZEROS),
                 "v_bias": ((k, d), ("kv_heads", "head_dim"), ZEROS)}
    if cfg.qk_norm:
        attn |= {n: ((d,), ("norm",), norm["scale"][2]) for n in ("q_norm", "k_norm")}
    mlp = {"gate_proj": ((e, f), ("embed", "mlp"), NORMAL), "up_proj": ((e, f), ("embed", "mlp"), NORMAL),
           "down_proj": ((f, e), ("mlp", "embed"), NORMAL)}
    out = {"attn_norm": norm, "attn": attn, "mlp_norm": norm, "mlp": mlp}
    if cfg.sandwich_norms:
        out |= {"attn_post_norm": norm, "mlp_post_norm": norm}
    return out


class Weights(nn.Module):
    """Declares one sub-layer's parameters; returns them as the layer code uses them: matrices in
    the compute dtype and gathered, biases in the compute dtype, norm scales as stored.

    Two optional variable collections change a matrix (LoRA / QLoRA, `jaxevo.lora`): ``qbase``
    holds it quantised instead of in ``params`` (dequantised here, per layer, to the compute
    dtype); ``lora`` holds an adapter ``{"lora_a", "lora_b"}`` for it, which makes it an
    `Adapted` that `layers.dense` applies factorised (dropout keys from the ``lora_dropout`` rng)."""

    cfg: ModelConfig
    specs: dict
    lora: LoraSpec | None = None

    @nn.compact
    def __call__(self):
        out = {}
        for name, (shape, axes, init) in self.specs.items():
            if self.has_variable(QBASE, name):
                w = dequantize(self.get_variable(QBASE, name), shape, self.cfg.dtype)
            else:
                w = self.param(name, nn.with_logical_partitioning(init, axes), shape,
                               jnp.dtype(self.cfg.param_dtype))
            if name == "scale" or name.endswith("_norm"):
                out[name] = w
            elif name.endswith("bias"):
                out[name] = w.astype(self.cfg.dtype)
            else:
                out[name] = gathered(w, axes, self.cfg.dtype)
                if self.lora is not None and self.has_variable(LORA, name):
                    ab = self.get_variable(LORA, name)
                    key = self.make_rng(LORA_DROPOUT) if self.lora.dropout else None
                    out[name] = Adapted(out[name], ab["lora_a"], ab["lora_b"], self.lora, key)
        return out


class DecoderLayer(nn.Module):
    """One layer of the scan: (x, ropes, masks, sliding) -> (x, None). ropes = ((cos, sin) global,
    (cos, sin) local), masks = (global, windowed), sliding: this layer's scanned flag (a traced
    bool, only read when the model mixes both kinds of layers)."""

    cfg: ModelConfig
    lora: LoraSpec | None = None

    @nn.compact
    def __call__(self, x, ropes, masks, sliding):
        cfg = self.cfg
        w = {name: Weights(cfg, specs, self.lora, name=name)()
             for name, specs in layer_param_specs(cfg).items()}
        kinds = set(cfg.sliding_layers)
        if len(kinds) == 1:  # every layer alike: no per-layer choice in the program
            i = int(kinds.pop())
            (cos, sin), mask = ropes[i], masks[i]
        else:
            pick = lambda a, b: jnp.where(sliding, b, a)  # noqa: E731
            cos, sin = pick(ropes[0][0], ropes[1][0]), pick(ropes[0][1], ropes[1][1])
            mask = pick(*masks)
        attend = lambda q, k, v: (attend_masked(cfg, q, k, v, mask), None)  # noqa: E731
        return decoder_layer(cfg, w, x, cos, sin, attend, nn.with_logical_constraint)


class Transformer(nn.Module):
    cfg: ModelConfig
    lora: LoraSpec | None = None  # with adapters in the "lora" collection: see `Weights`

    @nn.compact
    def __call__(self, tokens, positions, mask, return_hidden=False):
        """tokens, positions [B, T] int32; mask [B, T, T] bool (`causal_mask`).

        Returns (logits [B, T, V] f32 — or the final-normed hidden [B, T, E] if return_hidden —,
        None); the second value keeps the calling convention of callers that unpack two.
        """
        cfg = self.cfg
        embedding = self.param("embedding", nn.with_logical_partitioning(NORMAL, ("vocab", "embed")),
                               (cfg.vocab_size, cfg.hidden_size), jnp.dtype(cfg.param_dtype))
        x = nn.with_logical_constraint(embed(cfg, embedding, tokens), ("batch", "length", "act_embed"))
        ropes, masks = layer_inputs(cfg, positions, mask, jnp.arange(tokens.shape[1])[None])
        layer = DecoderLayer
        if cfg.remat != "none":
            layer = nn.remat(layer, policy=REMAT[cfg.remat], prevent_cse=False)
        stack = nn.scan(layer, variable_axes={"params": 0, LORA: 0, QBASE: 0},
                        split_rngs={"params": True, LORA_DROPOUT: True},
                        in_axes=(nn.broadcast, nn.broadcast, 0), length=cfg.num_layers,
                        metadata_params={nn.PARTITION_NAME: "layers"})(cfg, self.lora, name="layers")
        x, _ = stack(x, ropes, masks, jnp.asarray(cfg.sliding_layers))
        x = rms_norm(cfg, Weights(cfg, layer_param_specs(cfg)["attn_norm"], name="final_norm")(), x)
        if return_hidden:
            return x, None
        if cfg.tie_word_embeddings:
            w = embedding.T
        else:
            w = self.param("lm_head", nn.with_logical_partitioning(NORMAL, ("embed", "vocab")),
                           (cfg.hidden_size, cfg.vocab_size), jnp.dtype(cfg.param_dtype))
        return logits_from_hidden(x, w, cfg), None


def lm_head_weight(params, cfg: ModelConfig) -> jax.Array:
    """The output projection [E, V] (the transposed embedding when tied)."""
    return params["embedding"].T if cfg.tie_word_embeddings else params["lm_head"]


def logits_from_hidden(hidden, w, cfg: ModelConfig) -> jax.Array:
    """hidden [..., E] @ w [E, V] -> f32 logits [..., V] (soft-capped if the model says so)."""
    return softcap(einsum_f32("...e,ev->...v", hidden.astype(cfg.dtype), w.astype(cfg.dtype)),
                   cfg.final_logit_softcap)


def layer_inputs(cfg: ModelConfig, positions, mask, query_slots):
    """What a layer reads besides its weights, for both kinds of layers: ((cos, sin) global,
    (cos, sin) local) and (mask, windowed mask). positions [B, T]; mask [B, T, S] over key slots
    0..S-1; query_slots [B or 1, T], the slot of each query. Kinds the model lacks are not built
    (None)."""
    kinds = set(cfg.sliding_layers)
    # Sliding layers have a RoPE of their own only with `rope_local_theta` (Gemma 3); otherwise
    # (Mistral, Phi-3) they share the global one, scaling included.
    own = bool(cfg.rope_local_theta) and True in kinds
    glob = rope_cos_sin(positions, cfg) if False in kinds or not own else None
    ropes = (glob, rope_cos_sin(positions, cfg, local=True) if own else glob)
    masks = (mask if False in kinds else None,
             windowed(mask, query_slots, cfg.sliding_window) if True in kinds else None)
    return ropes, masks


def windowed(mask, query_slots, window: int) -> jax.Array:
    """mask [B, T, S] narrowed to keys less than `window` slots behind each query:
    query_slots [B or 1, T] int."""
    return mask & (query_slots[:, :, None] - jnp.arange(mask.shape[-1]) < window)


def causal_mask(valid: jax.Array, segment_ids: jax.Array | None = None,
                sliding_window: int | None = None) -> jax.Array:
    """valid [B, T] (1 = real token) -> [B, T, T] bool: causal, real keys only, same segment; a
    negative segment id marks a shared prefix that every later token of its row sees (one prompt
    for several completions: `train.rollout.group_batch`).

    Rows of padding queries may be all False; the softmax then sees finfo.min everywhere and stays
    finite (their outputs are never used).
    """
    m = visible_mask(valid, jnp.arange(valid.shape[1])[None], sliding_window)
    if segment_ids is not None:
        m &= (segment_ids[:, :, None] == segment_ids[:, None, :]) | (segment_ids[:, None, :] < 0)
    return m


def visible_mask(kv_valid: jax.Array, query_slots: jax.Array, sliding_window: int | None = None) -> jax.Array:
    """kv_valid [B, S] (slot holds a real token), query_slots [B or 1, T] int -> [B, T, S] bool:
    a query at slot q sees the real keys at slots <= q (and > q - sliding_window)."""
    s = jnp.arange(kv_valid.shape[1])
    q = query_slots[:, :, None]
    m = (s <= q) & kv_valid.astype(bool)[:, None, :]
    if sliding_window:
        m &= q - s < sliding_window
    return m


def positions_from_valid(valid: jax.Array) -> jax.Array:
    """valid [B, T] -> positions [B, T]: 0,1,2.. over real tokens (left padding gets 0)."""
    return jnp.maximum(jnp.cumsum(valid.astype(jnp.int32), axis=1) - 1, 0)


def teacher_forced_logprobs(params, cfg: ModelConfig, prompt_ids, completion_ids) -> np.ndarray:
    """Log-probs of `completion_ids` after `prompt_ids` in one plain forward (no cache, no
    padding): the reference the sampler's log-probs must equal. f32 numpy [len(completion)]."""
    ids = np.asarray([list(prompt_ids) + list(completion_ids)], np.int32)
    width = -(-ids.shape[1] // 32) * 32  # right-pad to a multiple of 32: few compilations
    padded = np.zeros((1, width), np.int32)
    padded[0, :ids.shape[1]] = ids[0]
    valid = np.zeros((1, width), np.int32)
    valid[0, :ids.shape[1]] = 1
    lp = np.asarray(_all_logprobs(params, jnp.asarray(padded), jnp.asarray(valid), cfg=cfg))
    start = len(prompt_ids)
    return lp[0, start - 1:ids.shape[1] - 1][np.arange(len(completion_ids)), ids[0, start:]]


@functools.partial(jax.jit, static_argnames=("cfg",))
def _all_logprobs(params, tokens, valid, *, cfg):
    logits, _ = Transformer(cfg).apply({"params": params}, tokens, positions_from_valid(valid),
                                       causal_mask(valid))
    return jax.nn.log_softmax(logits, axis=-1)
