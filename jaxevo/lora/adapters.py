"""Adapter matrices: shapes and logical axes, initialisation, and the merge into the base weights.

For a target weight ``W [L, *in, *out]`` (stacked over the ``L`` scanned layers, the layout of
`jaxevo.models.transformer.layer_param_specs`) the adapter is

    lora_a [L, *in, r]   (logical axes: layers, W's input axes, replicated rank)
    lora_b [L, r, *out]  (logical axes: layers, replicated rank, W's output axes)

so each matrix shards like the base weight it modifies (q's A over `embed`/fsdp, its B over
`heads`/tensor). The effective weight is ``W + scale * A @ B`` per layer (`merge`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding

from jaxevo.lora.config import TARGETS, LoraSection
from jaxevo.models.config import ModelConfig
from jaxevo.models.transformer import layer_param_specs
from jaxevo.sharding import logical_to_spec

N_IN = {"o": 2}  # input dims of the per-layer weight (o_proj: heads x head_dim); others have 1


def adapter_specs(lcfg: LoraSection, cfg: ModelConfig) -> dict:
    """``{target: {"lora_a"|"lora_b": (shape, logical axes)}}`` of the chosen targets."""
    specs = layer_param_specs(cfg)
    out, r, n_layers = {}, lcfg.rank, cfg.num_layers
    for t in lcfg.target_names:
        _, sub, name = TARGETS[t][0]
        shape, axes, _ = specs[sub][name]
        n = N_IN.get(t, 1)
        out[t] = {"lora_a": ((n_layers, *shape[:n], r), ("layers", *axes[:n], None)),
                  "lora_b": ((n_layers, r, *shape[n:]), ("layers", None, *axes[n:]))}
    return out


def adapter_shardings(lcfg: LoraSection, cfg: ModelConfig, mesh) -> dict:
    """NamedSharding tree of the adapters (from their logical axes, like the base params)."""
    return {t: {k: NamedSharding(mesh, logical_to_spec(axes, shape, mesh))
                for k, (shape, axes) in ab.items()}
            for t, ab in adapter_specs(lcfg, cfg).items()}


# Adapters train in f32 whatever the base's param_dtype (a bf16 base is frozen, so its rounding
# never accumulates; Adam on bf16 adapters would lose small updates).
ADAPTER_DTYPE = jnp.float32


def abstract_adapters(lcfg: LoraSection, cfg: ModelConfig) -> dict:
    return {t: {k: jax.ShapeDtypeStruct(shape, ADAPTER_DTYPE) for k, (shape, _) in ab.items()}
            for t, ab in adapter_specs(lcfg, cfg).items()}


def init_adapters(lcfg: LoraSection, cfg: ModelConfig, rng: jax.Array, shardings=None) -> dict:
    """Fresh f32 adapters: B = 0 (so the first forward is the base model's);
    A per ``lcfg.init``: PEFT's ``default`` (kaiming-uniform, a=sqrt(5): U(+-1/sqrt(fan_in))) or
    ``gaussian`` (N(0, 1/r))."""
    specs = adapter_specs(lcfg, cfg)

    def make(key):
        out = {}
        for (t, ab), k in zip(specs.items(), jax.random.split(key, len(specs))):
            a_shape, b_shape = ab["lora_a"][0], ab["lora_b"][0]
            if lcfg.init == "gaussian":
                a = jax.random.normal(k, a_shape, jnp.float32) / lcfg.rank
            else:
                bound = 1.0 / math.sqrt(math.prod(a_shape[1:-1]))
                a = jax.random.uniform(k, a_shape, jnp.float32, -bound, bound)
            out[t] = {"lora_a": a, "lora_b": jnp.zeros(b_shape, ADAPTER_DTYPE)}
        return out
    return jax.jit(make, out_shardings=shardings)(rng)


def delta(a: jax.Array, b: jax.Array, scale: float) -> jax.Array:
    """scale * A @ B per layer: a [L, *in, r], b [L, r, *out] -> [L, *in, *out] f32."""
    n_layers, r = a.shape[0], a.shape[-1]
    a2 = a.reshape(n_layers, -1, r).astype(jnp.float32)
    b2 = b.reshape(n_layers, r, -1).astype(jnp.float32)
    d = jnp.einsum("lir,lro->lio", a2, b2, precision=jax.lax.Precision.HIGHEST)
    return scale * d.reshape(n_layers, *a.shape[1:-1], *b.shape[2:])


def merge(params: dict, adapters: dict, lcfg: LoraSection) -> dict:
    """The base ``params`` with every adapted weight replaced by ``W + scale * A @ B`` (in W's
    dtype); other leaves are the same arrays. Pure: runs inside a jitted step or on the host."""
    out = _copy_dicts(params)
    for t, ab in adapters.items():
        path = TARGETS[t][0]
        node = out
        for p in path[:-1]:
            node = node[p]
        w = node[path[-1]]
        node[path[-1]] = (w.astype(jnp.float32) + delta(ab["lora_a"], ab["lora_b"], lcfg.scale)
                          ).astype(w.dtype)
    return out


def _copy_dicts(tree):
    return {k: _copy_dicts(v) for k, v in tree.items()} if isinstance(tree, dict) else tree


def num_adapter_params(lcfg: LoraSection, cfg: ModelConfig) -> int:
    return sum(math.prod(s) for ab in adapter_specs(lcfg, cfg).values() for s, _ in ab.values())
