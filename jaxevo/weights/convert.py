"""The one table that maps transformers tensor names onto jaxevo's parameter tree, both ways.

jaxevo params (scanned layers stacked on axis 0):
    embedding [V, E]                      <- model.embed_tokens.weight
    layers/attn/q_proj [L, E, H, D]       <- model.layers.{i}.self_attn.q_proj.weight [H*D, E]
    layers/attn/k_proj, v_proj [L, E, K, D]
    layers/attn/o_proj [L, H, D, E]       <- o_proj.weight [E, H*D]
    layers/attn/{q,k,v}_bias [L, H|K, D]  <- {q,k,v}_proj.bias (Qwen2)
    layers/mlp/{gate,up}_proj [L, E, F]   <- mlp.{gate,up}_proj.weight [F, E]
    layers/mlp/down_proj [L, F, E]        <- mlp.down_proj.weight [E, F]
    layers/{attn,mlp}_norm/scale [L, E]   <- input_layernorm / post_attention_layernorm
    final_norm/scale [E]                  <- model.norm.weight
    lm_head [E, V]                        <- lm_head.weight [V, E] (absent when tied)
  per family, besides:
    layers/attn/{q,k}_norm [L, D]         <- self_attn.{q,k}_norm.weight (Qwen3, Gemma 3)
    layers/mlp_norm, attn_post_norm, mlp_post_norm
                                          <- pre_feedforward_layernorm, post_attention_layernorm,
                                             post_feedforward_layernorm (Gemma 3)
    layers/attn/{q,k,v}_proj              <- rows of self_attn.qkv_proj.weight (Phi-3)
    layers/mlp/{gate,up}_proj             <- the two halves of mlp.gate_up_proj.weight (Phi-3)

Loading streams one tensor at a time into each device's shard (`load_params`), so no host ever holds
more than one parameter's local share plus one HF tensor.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from jaxevo.errors import WeightsError
from jaxevo.models.config import ModelConfig
from jaxevo.models.transformer import Transformer
from jaxevo.weights.source import TensorSource


@dataclasses.dataclass(frozen=True)
class Entry:
    path: tuple[str, ...]  # path in the params tree
    hf: str  # transformers name; "{i}" for per-layer tensors
    to_jax: Callable[[np.ndarray], np.ndarray]  # one HF tensor -> one (per-layer) jaxevo array
    to_hf: Callable[[np.ndarray], np.ndarray]
    # (start, stop): this entry is those rows of a fused HF tensor (Phi-3's qkv_proj, gate_up_proj);
    # the entries sharing `hf` are its parts in row order.
    rows: tuple[int, int] | None = None

    @property
    def per_layer(self) -> bool:
        return "{i}" in self.hf


def _proj_in(n, d):  # [n*d, e] -> [e, n, d]
    return lambda w: w.T.reshape(w.shape[1], n, d), lambda w: w.reshape(w.shape[0], -1).T


def table(cfg: ModelConfig) -> list[Entry]:
    """Every parameter of `cfg`'s tree with its transformers tensor name and layout changes."""
    h, k, d, f = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.intermediate_size
    same = (lambda w: w, lambda w: w)
    tr = (lambda w: w.T, lambda w: w.T)
    lay = "model.layers.{i}."
    fused = cfg.model_type == "phi3"
    qkv = {"q": (h, 0), "k": (k, h * d), "v": (k, (h + k) * d)}  # heads, first row in qkv_proj
    e = [Entry(("embedding",), "model.embed_tokens.weight", *same)]
    for name, (n, start) in qkv.items():
        e.append(Entry(("layers", "attn", f"{name}_proj"), lay + "self_attn.qkv_proj.weight", *_proj_in(n, d),
                       rows=(start, start + n * d)) if fused else
                 Entry(("layers", "attn", f"{name}_proj"), lay + f"self_attn.{name}_proj.weight", *_proj_in(n, d)))
    e.append(Entry(("layers", "attn", "o_proj"), lay + "self_attn.o_proj.weight",
                   lambda w: w.T.reshape(h, d, w.shape[0]), lambda w: w.reshape(h * d, -1).T))
    if fused:
        e += [Entry(("layers", "mlp", "gate_proj"), lay + "mlp.gate_up_proj.weight", *tr, rows=(0, f)),
              Entry(("layers", "mlp", "up_proj"), lay + "mlp.gate_up_proj.weight", *tr, rows=(f, 2 * f))]
    else:
        e += [Entry(("layers", "mlp", "gate_proj"), lay + "mlp.gate_proj.weight", *tr),
              Entry(("layers", "mlp", "up_proj"), lay + "mlp.up_proj.weight", *tr)]
    e.append(Entry(("layers", "mlp", "down_proj"), lay + "mlp.down_proj.weight", *tr))
    if cfg.sandwich_norms:
        norms = {"attn_norm": "input_layernorm", "attn_post_norm": "post_attention_layernorm",
                 "mlp_norm": "pre_feedforward_layernorm", "mlp_post_norm": "post_feedforward_layernorm"}
    else:
        norms = {"attn_norm": "input_layernorm", "mlp_norm": "post_attention_layernorm"}
    e += [Entry(("layers", ours, "scale"), lay + f"{theirs}.weight", *same) for ours, theirs in norms.items()]
    if cfg.qk_norm:
        e += [Entry(("layers", "attn", f"{n}_norm"), lay + f"self_attn.{n}_norm.weight", *same) for n in "qk"]
    e.append(Entry(("final_norm", "scale"), "model.norm.weight", *same))
    if cfg.qkv_bias:
        for name, n in (("q", h), ("k", k), ("v", k)):
            e.append(Entry(("layers", "attn", f"{name}_bias"), lay + f"self_attn.{name}_proj.bias",
                           lambda w, n=n: w.reshape(n, d), lambda w: w.reshape(-1)))
    if not cfg.tie_word_embeddings:
        e.append(Entry(("lm_head",), "lm_head.weight", *tr))
    return e


def _get(tree, path):
    for p in path:
        tree = tree[p]
    return tree


def _set(tree, path, value):
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value


def abstract_params(cfg: ModelConfig):
    """ShapeDtypeStruct tree of the params (no compute, no memory)."""
    tok = jnp.zeros((1, 1), jnp.int32)
    boxed = jax.eval_shape(lambda: Transformer(cfg).init(
        jax.random.key(0), tok, tok, jnp.ones((1, 1, 1), bool))["params"])
    return nn.meta.unbox(boxed)


def _hf_shape(ent: Entry, jax_shape) -> tuple[int, ...]:
    # Convert a zero-strided view so shape arithmetic never allocates the tensor.
    fake = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), shape=jax_shape,
                                           strides=(0,) * len(jax_shape))
    return tuple(ent.to_hf(fake).shape)


def check_source(source: TensorSource, cfg: ModelConfig) -> None:
    """Every expected tensor exists with the expected shape; else a WeightsError listing them."""
    keys = set(source.keys())
    shapes = abstract_params(cfg)
    missing, wrong = [], []
    wants: dict[str, tuple] = {}  # HF name pattern -> shape (the parts of a fused tensor stacked)
    for ent in table(cfg):
        shape = _get(shapes, ent.path).shape
        part = _hf_shape(ent, shape[1:] if ent.per_layer else shape)
        prev = wants.get(ent.hf)
        wants[ent.hf] = part if prev is None else (prev[0] + part[0], *part[1:])
    for hf, want in wants.items():
        names = [hf.format(i=i) for i in range(cfg.num_layers)] if "{i}" in hf else [hf]
        for n in names:
            if n not in keys:
                missing.append(n)
            elif tuple(source.shape(n)) != want:
                wrong.append(f"{n} is {tuple(source.shape(n))}, config needs {want}")
    if missing or wrong:
        msg = []
        if missing:
            msg.append(f"{len(missing)} tensors missing, e.g. {missing[:5]}")
        if wrong:
            msg.append(f"{len(wrong)} shape mismatches, e.g. {wrong[:3]}")
        raise WeightsError("checkpoint does not match its config: " + "; ".join(msg))


def load_params(source: TensorSource, cfg: ModelConfig, shardings=None):
    """Build the params tree from a TensorSource, streaming into `shardings` (a tree of
    `jax.sharding.Sharding` matching the params; default: the first local device).

    Each parameter is filled shard by shard on the host: one HF tensor is read and converted at a
    time and copied into the local shard buffers that need it.
    """
    check_source(source, cfg)
    shapes = abstract_params(cfg)
    dtype = jnp.dtype(cfg.param_dtype)
    params: dict = {}
    for ent in table(cfg):
        shape = _get(shapes, ent.path).shape
        sharding = _get(shardings, ent.path) if shardings is not None else \
            jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        index_map = sharding.addressable_devices_indices_map(shape)
        bufs = {dev: np.empty(_shard_shape(shape, idx), dtype) for dev, idx in index_map.items()}
        layers = range(cfg.num_layers) if ent.per_layer else [None]
        for i in layers:
            w = np.asarray(source.get(ent.hf.format(i=i)), np.float32)
            w = ent.to_jax(w[ent.rows[0]:ent.rows[1]] if ent.rows else w)
            for dev, idx in index_map.items():
                _fill(bufs[dev], w, idx, i)
        arrays = [jax.device_put(bufs[dev], dev) for dev in index_map]
        _set(params, ent.path, jax.make_array_from_single_device_arrays(shape, sharding, arrays))
    return params


def _shard_shape(shape, idx):
    return tuple(len(range(*s.indices(n))) for s, n in zip(idx, shape))


def _fill(buf, w, idx, layer):
    """Copy the part of tensor `w` (one layer's, if `layer` is not None) that shard `idx` holds."""
    if layer is None:
        buf[...] = w[idx]
        return
    lo, hi, _ = idx[0].indices(10**12)
    if lo <= layer < hi:
        buf[layer - lo] = w[idx[1:]]


def params_to_hf(params, cfg: ModelConfig, dtype=np.float32) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (transformers name, array [torch layout]) one tensor at a time, gathered to host.
    Multi-process: every process must iterate (each tensor's gather is a collective); a 16-bit
    `dtype` is cast on the devices before the gather (half the traffic and host memory). The parts
    of a fused tensor (Phi-3) are gathered together and concatenated."""
    groups: dict[str, list[Entry]] = {}
    for ent in table(cfg):
        groups.setdefault(ent.hf, []).append(ent)
    for hf, ents in groups.items():
        fulls = []
        for ent in ents:
            x = _get(params, ent.path)
            if isinstance(x, jax.Array) and np.dtype(dtype).itemsize < x.dtype.itemsize:
                x = x.astype(dtype)
            fulls.append(_to_host(x))

        def tensor(i=None):
            parts = [ent.to_hf(x if i is None else x[i]) for ent, x in zip(ents, fulls)]
            return np.ascontiguousarray(np.concatenate(parts) if len(parts) > 1 else parts[0]).astype(dtype)
        if "{i}" in hf:
            for i in range(cfg.num_layers):
                yield hf.format(i=i), tensor(i)
        else:
            yield hf, tensor()


def _to_host(x) -> np.ndarray:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))
