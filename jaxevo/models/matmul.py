"""Products in the compute dtype with f32 accumulation, forward **and backward**.

    y = einsum_f32("bte,ef->btf", x, w)   # x, w bf16 -> y f32

The forward is ``jnp.einsum(..., preferred_element_type=f32)``: bf16 operands, f32 sums, the
recipe XLA:CPU runs on the machine's bf16 units (AVX512-BF16, AMX), faster than its f32 dots
(docs/benchmarks.md). JAX's own backward of that product multiplies the **f32** cotangent by a
bf16 operand; XLA then widens the operand and both backward products run in f32, at the f32
speed: two thirds of a train step's matmul work on the slower path. Here the backward rounds the
cotangent to the operands' dtype first, so both of its products take the same fast recipe as the
forward. That rounding is what torch's autocast does (its backward matmuls take bf16 gradients);
where the cotangent comes from a bf16 activation (every projection: `layers.dense` rounds its
output) it is exact. The operand gradients are rounded to the operands' dtype, as JAX's rule does.

With f32 operands (or mixed dtypes) this is plain ``jnp.einsum``: nothing changes in f32 training.

The remat policies cannot see the dot inside the custom rule, so its result carries a name
(`PRODUCT`, or `BATCHED_PRODUCT` when a letter is in both operands and the result, as attention's
are) that `transformer.REMAT` saves where it would save the dot.
"""

from __future__ import annotations

import functools
import string

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

PRODUCT, BATCHED_PRODUCT = "product", "batched_product"
F32 = jnp.float32
_LOW = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def einsum_f32(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
    """``einsum(spec, a, b)`` accumulated and returned in f32. Both operands of one low-precision
    dtype and a two-operand product spec: the backward products take low-precision operands too
    (see the module doc); otherwise JAX's own rule."""
    if a.dtype == b.dtype and a.dtype in _LOW:
        parts = _explicit(spec, a.ndim, b.ndim)
        if parts is not None:
            sa, sb, so = parts
            batched = any(c in sb and c in so for c in sa)
            return checkpoint_name(_lowp(parts, a, b), BATCHED_PRODUCT if batched else PRODUCT)
    return jnp.einsum(spec, a, b, preferred_element_type=F32)


def _explicit(spec: str, a_ndim: int, b_ndim: int) -> tuple[str, str, str] | None:
    """``spec`` as three letter strings (``...`` spelled out, right-aligned as einsum broadcasts
    it), or None when its transposes are not products of the same kind (a letter only one
    operand has, a repeated letter, an implicit output)."""
    if "->" not in spec:
        return None
    ins, out = spec.replace(" ", "").split("->")
    sa, sb = ins.split(",")
    if "..." in spec:
        free = [c for c in string.ascii_letters if c not in spec]
        na = a_ndim - len(sa.replace("...", "")) if "..." in sa else 0
        nb = b_ndim - len(sb.replace("...", "")) if "..." in sb else 0
        k = max(na, nb)
        sa, sb = sa.replace("...", "".join(free[k - na:k])), sb.replace("...", "".join(free[k - nb:k]))
        out = out.replace("...", "".join(free[:k]))
    for s in (sa, sb, out):
        if len(set(s)) != len(s):
            return None
    # each letter in at least two of the three: a dot (batch letters in all three)
    if any(c not in sb and c not in out for c in sa) or any(c not in sa and c not in out for c in sb):
        return None
    if any(c not in sa and c not in sb for c in out):
        return None
    return sa, sb, out


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _lowp(parts: tuple[str, str, str], a: jax.Array, b: jax.Array) -> jax.Array:
    sa, sb, so = parts
    return jnp.einsum(f"{sa},{sb}->{so}", a, b, preferred_element_type=F32)


def _lowp_fwd(parts, a, b):
    return _lowp(parts, a, b), (a, b)


def _lowp_bwd(parts, res, g):
    sa, sb, so = parts
    a, b = res
    g = g.astype(a.dtype)
    da = jnp.einsum(f"{so},{sb}->{sa}", g, b, preferred_element_type=F32).astype(a.dtype)
    db = jnp.einsum(f"{sa},{so}->{sb}", a, g, preferred_element_type=F32).astype(b.dtype)
    return da, db


_lowp.defvjp(_lowp_fwd, _lowp_bwd)
