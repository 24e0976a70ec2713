"""`einsum_f32`: compute-dtype products whose backward stays on the bf16-in / f32-sum recipe.

References: the forward is ``jnp.einsum(..., preferred_element_type=f32)`` (bitwise); the
backward is the transposed products computed in float64 numpy from the bf16 operands and the
bf16-rounded cotangent, then rounded to bf16 (so at most one bf16 rounding step apart).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxevo.models.matmul import einsum_f32
from jaxevo.models.transformer import REMAT

BF16 = jnp.bfloat16
CASES = [  # the model's products: projections (one with "..."), attention's two, the LM head
    ("bte,ef->btf", (2, 5, 8), (8, 6)),
    ("...i,oi->...o", (2, 5, 8), (6, 8)),
    ("btkgd,bskd->bkgts", (2, 5, 3, 2, 4), (2, 7, 3, 4)),
    ("bkgts,bskd->btkgd", (2, 3, 2, 5, 7), (2, 7, 3, 4)),
    ("bce,ev->bcv", (2, 4, 8), (8, 16)),
]


def _operands(sa, sb, dtype=BF16):
    ka, kb = jax.random.split(jax.random.key(0))
    return jax.random.normal(ka, sa).astype(dtype), jax.random.normal(kb, sb).astype(dtype)


def _bf16_ulp(x):
    """One bf16 step at each element's magnitude (8 significant bits)."""
    return np.exp2(np.floor(np.log2(np.maximum(np.abs(x), 1e-30))) - 7)


@pytest.mark.parametrize("spec,sa,sb", CASES)
def test_forward_is_the_plain_product(spec, sa, sb):
    a, b = _operands(sa, sb)
    np.testing.assert_array_equal(einsum_f32(spec, a, b),
                                  jnp.einsum(spec, a, b, preferred_element_type=jnp.float32))


@pytest.mark.parametrize("spec,sa,sb", CASES)
def test_backward_products_take_the_bf16_cotangent(spec, sa, sb):
    a, b = _operands(sa, sb)
    out = einsum_f32(spec, a, b)
    g = jax.random.normal(jax.random.key(1), out.shape, jnp.float32)
    _, vjp = jax.vjp(lambda x, y: einsum_f32(spec, x, y), a, b)
    da, db = vjp(g)
    assert da.dtype == BF16 and db.dtype == BF16
    # float64 reference from the same bf16 values, the cotangent rounded to bf16 first
    ins, so = spec.split("->")
    sa_, sb_ = ins.split(",")
    if "..." in spec:
        sa_, so = sa_.replace("...", "xy"), so.replace("...", "xy")
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    g64 = np.asarray(g.astype(BF16), np.float64)
    ref_a = np.einsum(f"{so},{sb_}->{sa_}", g64, b64)
    ref_b = np.einsum(f"{sa_},{so}->{sb_}", a64, g64)
    for got, ref in ((da, ref_a), (db, ref_b)):
        got = np.asarray(got, np.float64)
        assert np.all(np.abs(got - ref) <= _bf16_ulp(ref) + 1e-6), np.max(np.abs(got - ref))


def _dot_operand_types(fn, *args) -> list[str]:
    text = jax.jit(fn).lower(*args).as_text()
    return [line.split(": (")[-1].split(") ->")[0] for line in text.splitlines()
            if "stablehlo.dot_general" in line]


def test_the_backward_has_no_f32_products():
    """What makes a bf16 train step fast on a CPU with bf16 units: no product widened to f32."""
    a, b = _operands((4, 8, 16), (16, 32))
    loss = lambda x, y: jnp.sum(jnp.tanh(einsum_f32("bte,ef->btf", x, y)))  # noqa: E731
    types = _dot_operand_types(jax.grad(loss, (0, 1)), a, b)
    assert len(types) == 3 and all("f32" not in t for t in types), types
    plain = lambda x, y: jnp.sum(jnp.tanh(jnp.einsum("bte,ef->btf", x, y, preferred_element_type=jnp.float32)))  # noqa: E731
    assert any("f32" in t for t in _dot_operand_types(jax.grad(plain, (0, 1)), a, b))  # JAX's own rule


@pytest.mark.parametrize("spec,sa,sb,dtype", [
    ("bte,ef->btf", (2, 5, 8), (8, 6), jnp.float32),  # f32 operands
    ("ij,j->j", (3, 4), (4,), jnp.float32),
    ("ij,j->j", (3, 4), (4,), BF16),  # `i` only in the first operand: not a product
])
def test_f32_and_unsupported_specs_are_the_plain_einsum(spec, sa, sb, dtype):
    a, b = _operands(sa, sb, dtype)
    f = lambda x, y: jnp.sum(jnp.sin(einsum_f32(spec, x, y)))  # noqa: E731
    r = lambda x, y: jnp.sum(jnp.sin(jnp.einsum(spec, x, y, preferred_element_type=jnp.float32)))  # noqa: E731
    for x, y in zip(jax.grad(f, (0, 1))(a, b), jax.grad(r, (0, 1))(a, b)):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("policy,forward_dots", [("dots_no_batch", 2), ("full", 3)])
def test_remat_policies_save_the_projections(policy, forward_dots):
    """dots_no_batch keeps a projection's output, as it keeps a plain dot's (2 forward products
    + 4 backward ones); `full` recomputes the one whose output the backward needs (h)."""
    a, w1 = _operands((2, 8, 16), (16, 16))
    w2 = w1 * 0.5

    def block(x, w1, w2):
        h = einsum_f32("bte,ef->btf", x, w1).astype(BF16)
        return einsum_f32("bte,ef->btf", jnp.tanh(h), w2)

    loss = lambda x, w1, w2: jnp.sum(jax.checkpoint(block, policy=REMAT[policy])(x, w1, w2) ** 2)  # noqa: E731
    n = len(_dot_operand_types(jax.grad(loss, (0, 1, 2)), a, w1, w2))
    assert n == forward_dots + 4, n

