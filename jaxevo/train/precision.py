"""The compute copy of the master weights: how fp32 weights become the bf16 the forward sees.

The model casts its fp32 master weights to the compute dtype at use, rounding to nearest. An
optimizer update far below one bf16 step (lr 1e-6 on a weight of 0.05, whose bf16 step is 2.4e-4)
then either vanishes (a weight on the bf16 grid, as in every bf16 checkpoint) or, for a weight
exactly halfway between two bf16 values (8 % of the embedded Q4_1 model's weights: its dequantised
values have short mantissas), flips a whole bf16 step in the update's direction. The forward
trains on neither what the optimizer asked for nor anything small: docs/numerics.md measures it.

``stochastic`` rounding makes the compute copy unbiased: each weight rounds up with probability
equal to its distance from the bf16 value below, so ``E[copy] = master`` and a step's expected
change of the copy is the optimizer's update, wherever on the bf16 grid the weight sits. The
random bits are a fixed function of the run's seed (the same every step): the copy then stays
within one bf16 step of the master forever, the step is deterministic (resume is bitwise exact)
and the step-0 copy -- which the reference log-probs are computed with -- is the one step 1
trains, so a preference loss starts at exactly its value at zero margin.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

Rounding = Literal["nearest", "stochastic"]
ROUNDINGS = ("nearest", "stochastic")
# Leaves the model uses as stored (RMSNorm scales, see models/transformer.Weights): never rounded.
AS_STORED = ("scale",)
_SALT = 0x62663136  # "bf16": the rounding bits' stream, apart from every other use of the seed


def _leaf_name(path) -> str:
    return str(getattr(path[-1], "key", path[-1]))


def stochastic_round_bf16(x: jax.Array, bits: jax.Array) -> jax.Array:
    """fp32 ``x`` [...] -> fp32 [...] holding bf16 values: up with probability (distance to the
    bf16 value below) / (bf16 step), using the uint32 ``bits`` [...] (only the low 16 are read).

    Adding 16 random low bits to the fp32 pattern and truncating them is exactly that rounding for
    either sign (the pattern is sign and magnitude). Non-finite values pass through unchanged."""
    u = jax.lax.bitcast_convert_type(x, jnp.uint32)
    r = (u + (bits & jnp.uint32(0xFFFF))) & jnp.uint32(0xFFFF0000)
    y = jax.lax.bitcast_convert_type(r, jnp.float32)
    return jnp.where(jnp.isfinite(x) & jnp.isfinite(y), y, x)


def rounding_key(seed: int) -> jax.Array:
    """The key of a run's rounding bits (the same for every step: see the module doc)."""
    return jax.random.fold_in(jax.random.key(seed), _SALT)


def compute_copy(params, rounding: Rounding, compute_dtype, key: jax.Array | None):
    """The master ``params`` as the forward should see them, still fp32 and differentiable.

    ``nearest`` (or a non-bf16 compute dtype, or non-fp32 leaves): ``params`` unchanged, the model
    rounds to nearest when it casts. ``stochastic``: every fp32 leaf except the norm scales
    replaced by its stochastically rounded bf16 value (`stochastic_round_bf16`, bits from ``key``
    folded with the leaf's index) through a straight-through estimator, so the gradient is the
    one with respect to the master weights and the model's cast to bf16 is exact.
    """
    if rounding == "nearest" or jnp.dtype(compute_dtype) != jnp.bfloat16:
        return params
    if rounding != "stochastic":
        raise ValueError(f"rounding={rounding!r}: choose one of {ROUNDINGS}")
    flat, tree = jax.tree_util.tree_flatten_with_path(params)
    out = [copy_leaf(p, i, key) if rounds(path, p) else p for i, (path, p) in enumerate(flat)]
    return jax.tree_util.tree_unflatten(tree, out)


def rounds(path, p) -> bool:
    """Whether `compute_copy` rounds this leaf (fp32, not a norm scale)."""
    return p.dtype == jnp.float32 and _leaf_name(path) not in AS_STORED


def hashed_bits(shape: tuple[int, ...], key: jax.Array) -> jax.Array:
    """uint32 ``shape``: a counter-based hash of each element's flat index under two words drawn
    from ``key``.

    Not `jax.random.bits`: threefry spends ~80 integer operations on every word, and drawing one
    per weight each step took a third of a small train step on a CPU (docs/benchmarks.md). This
    is a few multiply-xorshifts fused into the rounding's own loop: the bits are as fixed (the
    same ``key``, the same bits, on any mesh: the index is global) and distinct elements get
    distinct words (the mix is a bijection of the index, for leaves below 2^32 elements)."""
    s = jax.random.bits(key, (2,), jnp.uint32)
    # The flat index from one iota per dimension, not a reshaped 1-D iota: each shard of a sharded
    # leaf then computes its own indices, with no relayout of an index array.
    flat = jnp.zeros(shape, jnp.uint32)
    stride = 1
    for d in reversed(range(len(shape))):
        flat = flat + jax.lax.broadcasted_iota(jnp.uint32, shape, d) * jnp.uint32(stride)
        stride *= shape[d]
    return _mix32(_mix32(flat ^ s[0]) + s[1])


def _mix32(x: jax.Array) -> jax.Array:
    """A bijective 32-bit mix (C. Wellons' "lowbias32" integer hash)."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def copy_leaf(p: jax.Array, index: int, key: jax.Array) -> jax.Array:
    """Leaf ``index`` (in flattening order) of `compute_copy`'s stochastic copy, shape of ``p``."""
    bits = hashed_bits(p.shape, jax.random.fold_in(key, index))
    rounded = stochastic_round_bf16(jax.lax.stop_gradient(p), bits)
    return p + jax.lax.stop_gradient(rounded - p)  # exact: |rounded - p| < one bf16 step
