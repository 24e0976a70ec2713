"""QLoRA's frozen base: every projection (q, k, v, o, gate, up, down) of the params tree stored
quantised (`jaxevo.models.quantized`: int8 per output channel, or NF4 in blocks of 64), the
embedding, head and norms as they are. The model dequantises each layer's weight to the compute
dtype inside its layer scan (`models.transformer.Weights`), so the bf16 copy of one layer at a
time is all that exists besides the quantised bytes.

    qbase = quantize_base(params, "nf4", cfg, shardings)   # the step's frozen base argument
    variables = model_variables(qbase, adapters)           # {"params", "qbase", "lora"}
    params = dequantize_base(qbase, cfg)                   # what the base *is* (export, merge)

Why not qwix's quantisation (``qwix._src.core.qarray``): its NF4 stores one 4-bit code in a
``uint4`` array, which takes a whole byte per parameter on CPU and GPU (only TPU packs it), so
the base would not shrink to half a byte per parameter; its int8 per-channel quantisation would
fit, but one 80-line module for both formats keeps a single layout that `Weights` reads.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding

from jaxevo.errors import ConfigError
from jaxevo.lora.adapters import N_IN
from jaxevo.lora.config import TARGETS
from jaxevo.models.config import ModelConfig
from jaxevo.models.quantized import NF4_BLOCK, dequantize, is_quantized, quantize
from jaxevo.models.transformer import LORA, QBASE, layer_param_specs
from jaxevo.sharding import logical_to_spec

def _specs(cfg: ModelConfig) -> dict:
    """{target: (path, per-layer shape, logical axes, input axes)} of every projection."""
    specs = layer_param_specs(cfg)
    out = {}
    for t, (path, _) in TARGETS.items():
        shape, axes, _ = specs[path[1]][path[2]]
        out[t] = (path, shape, axes, N_IN.get(t, 1))
    return out


def check_quantizable(fmt: str, cfg: ModelConfig) -> None:
    """A `ConfigError` when a projection does not split into NF4 blocks of 64."""
    if fmt != "nf4":
        return
    for t, (_, shape, _, _) in _specs(cfg).items():
        if math.prod(shape) % NF4_BLOCK:
            raise ConfigError(f"lora.quantize_base=nf4: the {t} projection has "
                              f"{math.prod(shape)} weights per layer, not a multiple of the NF4 "
                              f"block ({NF4_BLOCK}); use lora.quantize_base=int8")


def _get(tree, path, *default):
    for p in path:
        if default and (not isinstance(tree, dict) or p not in tree):
            return default[0]
        tree = tree[p]
    return tree


def _replace(tree, path, value):
    """A copy of the nested dicts along ``path`` with its leaf replaced (other leaves shared)."""
    if not path:
        return value
    return {**tree, path[0]: _replace(tree[path[0]], path[1:], value)}


def quantized_shardings(fmt: str, cfg: ModelConfig, mesh, base_shardings) -> dict:
    """The params shardings with each projection's entry replaced by its quantised arrays'
    (int8: the weight's own layout, scales on its output axes; nf4: the packed codes and the
    block scales split over the fsdp axis, like the weight's ``embed`` axis, where it divides)."""
    out = base_shardings
    for t, (path, shape, axes, n_in) in _specs(cfg).items():
        L = cfg.num_layers
        if fmt == "int8":
            shapes = {"qvalue": ((L, *shape), ("layers", *axes)),
                      "scale": ((L, *shape[n_in:]), ("layers", *axes[n_in:]))}
        else:
            n = math.prod(shape)
            shapes = {"qvalue": ((L, n // 2), ("layers", "embed")),
                      "scale": ((L, n // NF4_BLOCK), ("layers", "embed"))}
        out = _replace(out, path, {k: NamedSharding(mesh, logical_to_spec(a, s, mesh))
                                   for k, (s, a) in shapes.items()})
    return out


def quantize_base(params: dict, fmt: str, cfg: ModelConfig, shardings=None) -> dict:
    """``params`` with every projection replaced by its quantised dict (jitted; laid out in
    ``shardings``, a `quantized_shardings` tree, when given). Pure: ``params`` is not changed."""
    check_quantizable(fmt, cfg)
    return jax.jit(lambda p: _quantize_tree(p, fmt, cfg), out_shardings=shardings)(params)


def _quantize_tree(params: dict, fmt: str, cfg: ModelConfig) -> dict:
    out = params
    for path, _, _, n_in in _specs(cfg).values():
        out = _replace(out, path, quantize(_get(params, path), fmt, n_in))
    return out


def dequantize_base(params: dict, cfg: ModelConfig, dtype=None) -> dict:
    """The inverse: every quantised projection as a dense array (``dtype``: the model's
    param dtype by default); a tree without quantised entries comes back unchanged."""
    dtype = dtype or jnp.dtype(cfg.param_dtype)
    out = params
    for path, shape, _, _ in _specs(cfg).values():
        q = _get(params, path, None)  # absent in other trees (a reward model's decoder + head)
        if q is not None and is_quantized(q):
            out = _replace(out, path, dequantize(q, shape, dtype))
    return out


def model_variables(params: dict, adapters: dict | None = None) -> dict:
    """The model's variables for a (possibly quantised) base and optional adapters
    ``{target: {lora_a, lora_b}}``: ``{"params": dense leaves, "qbase": quantised projections,
    "lora": adapters nested like the params}`` (collections that would be empty are left out)."""
    plain, qbase = params, {}
    for path, _ in TARGETS.values():
        q = _get(params, path) if path[-1] in _get(params, path[:-1]) else None
        if is_quantized(q):
            qbase = _replace_missing(qbase, path, q)
            sub = {k: v for k, v in _get(plain, path[:-1]).items() if k != path[-1]}
            plain = _replace(plain, path[:-1], sub)
    out = {"params": plain}
    if qbase:
        out[QBASE] = qbase
    if adapters:
        nested = {}
        for t, ab in adapters.items():
            nested = _replace_missing(nested, TARGETS[t][0], ab)
        out[LORA] = nested
    return out


def _replace_missing(tree, path, value):
    if len(path) == 1:
        return {**tree, path[0]: value}
    return {**tree, path[0]: _replace_missing(tree.get(path[0], {}), path[1:], value)}


def quantized_bytes(params: dict) -> int:
    """Bytes of the quantised projections (codes and scales) in ``params``."""
    return sum(x.size * x.dtype.itemsize for path, _ in TARGETS.values()
               for q in [_get(params, path)] if is_quantized(q) for x in q.values())


def frozen_base_shardings(lcfg, cfg: ModelConfig, mesh, base_shardings) -> dict:
    """The shardings of the step's frozen base: ``base_shardings`` (the params'), or their
    quantised form with ``lcfg.quantize_base``."""
    if not lcfg.quantize_base:
        return base_shardings
    return quantized_shardings(lcfg.quantize_base, cfg, mesh, base_shardings)


def abstract_frozen_base(lcfg, cfg: ModelConfig, mesh, abstract_params) -> dict:
    """``abstract_params`` (ShapeDtypeStructs with shardings) as the step's frozen base: quantised
    with ``lcfg.quantize_base`` (for `jaxevo plan`), else unchanged."""
    if not lcfg.quantize_base:
        return abstract_params
    fmt = lcfg.quantize_base
    check_quantizable(fmt, cfg)
    shapes = jax.eval_shape(lambda p: _quantize_tree(p, fmt, cfg), abstract_params)
    sh = quantized_shardings(fmt, cfg, mesh, jax.tree.map(lambda x: x.sharding, abstract_params))
    return jax.tree.map(lambda s, h: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=h), shapes, sh)
