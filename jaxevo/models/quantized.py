"""A frozen weight stored quantised and dequantised at use (QLoRA's base): int8 and NF4.

One layer's weight ``W [*in, *out]`` (stacked: a leading ``[L]`` on every array below) becomes a
dict that stands where the array stood in the params tree:

* ``int8``: ``{"qvalue": int8 [*in, *out], "scale": f32 [*out]}``, per output channel
  ``scale = absmax over the input axes / 127``, ``W ≈ qvalue · scale``  (1 byte/param + scales).
* ``nf4``: ``{"qvalue": uint8 [n / 2], "scale": f32 [n / 64]}``: W flattened row-major, blocks
  of 64, each block divided by its absmax and rounded to the nearest of the 16 NormalFloat-4
  values (Dettmers et al. 2023, appendix E; bitsandbytes' table), two 4-bit codes per byte
  (0.5 byte/param + 4 bytes per 64). No double quantisation of the absmax (the paper's further
  0.37 bit/param saving).

`dequantize` is what the model calls inside the layer scan, so only one layer's weight exists in
the compute dtype at a time.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

FORMATS = ("int8", "nf4")
NF4_BLOCK = 64
# The NF4 code book, as bitsandbytes (and the QLoRA paper's appendix E) lists it.
NF4_CODES = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], np.float32)


def is_quantized(x) -> bool:
    return isinstance(x, dict) and "qvalue" in x


def quantize(w: jax.Array, fmt: str, n_in: int) -> dict:
    """Quantise the stacked weight ``w [L, *in, *out]`` (``n_in`` input axes) per layer."""
    w = w.astype(jnp.float32)
    n_layers = w.shape[0]
    if fmt == "int8":
        absmax = jnp.max(jnp.abs(w), axis=tuple(range(1, 1 + n_in)))
        scale = jnp.where(absmax > 0, absmax / 127.0, 1.0)
        q = jnp.clip(jnp.round(w / scale.reshape(n_layers, *(1,) * n_in, *scale.shape[1:])),
                     -127, 127)
        return {"qvalue": q.astype(jnp.int8), "scale": scale}
    if fmt == "nf4":
        n = math.prod(w.shape[1:])
        blocks = w.reshape(n_layers, n // NF4_BLOCK, NF4_BLOCK)
        absmax = jnp.max(jnp.abs(blocks), axis=-1)
        norm = blocks / jnp.where(absmax > 0, absmax, 1.0)[..., None]
        mids = jnp.asarray((NF4_CODES[1:] + NF4_CODES[:-1]) / 2)  # nearest code: count midpoints below
        codes = jnp.searchsorted(mids, norm.reshape(n_layers, n), side="left").astype(jnp.uint8)
        packed = codes[:, 0::2] << 4 | codes[:, 1::2]
        return {"qvalue": packed.astype(jnp.uint8), "scale": absmax}
    raise ValueError(f"quantisation format {fmt!r}: choose one of {FORMATS}")


def dequantize(q: dict, shape: tuple[int, ...], dtype) -> jax.Array:
    """One or more layers' quantised weight (a `quantize` dict, leading dims ``lead`` = the
    qscale's leading dims beyond the format's) -> ``[*lead, *shape]`` in ``dtype``."""
    v, s = q["qvalue"], q["scale"]
    if v.dtype == jnp.int8:
        lead = v.shape[:v.ndim - len(shape)]
        n_out = s.ndim - len(lead)
        s = s.reshape(*lead, *(1,) * (len(shape) - n_out), *s.shape[len(lead):])
        return (v.astype(jnp.float32) * s).astype(dtype)
    lead = v.shape[:-1]
    codes = jnp.stack([v >> 4, v & 0xF], axis=-1).reshape(*lead, -1)
    vals = jnp.asarray(NF4_CODES)[codes.astype(jnp.int32)]
    vals = vals.reshape(*lead, -1, NF4_BLOCK) * s[..., None]
    return vals.reshape(*lead, *shape).astype(dtype)


def nbytes(q: dict) -> int:
    return sum(x.size * x.dtype.itemsize for x in q.values())
