"""The factorised LoRA projection used inside the layers: ``y = x·W + s·dropout(x)·A·B``.

`transformer.Weights` hands `layers.dense` an `Adapted` instead of a bare weight for each
projection that has an adapter; the adapter branch never forms ``A·B`` (no merged weight, no
full-size gradient of one: only ``[.., r]`` activations). The branch runs in f32, as PEFT runs it
(its adapters stay f32 by default and it casts the input to them): the adapters are small, and
the frozen base keeps the compute dtype.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

F32 = jnp.float32
# The remat name of an adapted projection's output (base + adapter branch, compute dtype).
ADAPTED_OUTPUT = "lora_adapted_output"


@dataclasses.dataclass(frozen=True)
class LoraSpec:
    """What the model needs to know of the adapters (static: hashed into the jitted forward)."""

    scale: float  # alpha / r (or alpha / sqrt(r))
    dropout: float = 0.0  # inverted dropout on the adapter input (PEFT's lora_dropout)


class Adapted(NamedTuple):
    """A projection with an adapter: w in the compute dtype (as `layers.gathered` makes it),
    a [*in, r], b [r, *out] (one layer's, f32), and the dropout key (None: no dropout)."""

    w: jax.Array
    a: jax.Array
    b: jax.Array
    spec: LoraSpec
    key: jax.Array | None


def adapter_specs(spec: str) -> tuple[str, str]:
    """An einsum ``"x,w->y"`` of the base matmul -> the two of the adapter branch, with ``R``
    for the rank: x·A over W's contracted (input) labels, then ·B onto W's output labels.
    E.g. "bte,ehd->bthd" -> ("bte,eR->btR", "btR,Rhd->bthd")."""
    ins, out = spec.split("->")
    xs, ws = ins.split(",")
    contracted = "".join(c for c in ws if c in xs and c not in out)
    w_out = "".join(c for c in ws if c not in contracted)
    kept = "".join(c for c in xs if c not in contracted)
    return f"{xs},{contracted}R->{kept}R", f"{kept}R,R{w_out}->{out}"


def adapter_product(x: jax.Array, w: Adapted, spec: str) -> jax.Array:
    """scale · dropout(x) · A · B in f32, shaped like ``einsum(spec, x, W)``. Inverted dropout
    (kept entries scaled by 1 / (1 - p)): its expectation is the undropped branch."""
    xf = x.astype(F32)
    p = w.spec.dropout
    if p and w.key is not None:
        keep = jax.random.bernoulli(w.key, 1.0 - p, xf.shape)
        xf = jnp.where(keep, xf / (1.0 - p), 0.0)
    s_a, s_b = adapter_specs(spec)
    hp = jax.lax.Precision.HIGHEST
    xa = jnp.einsum(s_a, xf, w.a.astype(F32), precision=hp, preferred_element_type=F32)
    return w.spec.scale * jnp.einsum(s_b, xa, w.b.astype(F32), precision=hp,
                                     preferred_element_type=F32)
