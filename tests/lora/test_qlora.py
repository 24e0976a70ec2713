"""QLoRA: the frozen base stored int8 (per output channel) or NF4 (blocks of 64), dequantised in
the layers; against a numpy reference, the QLoRA paper's code book, byte counts, and training."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxevo.lora.quantize import dequantize_base, quantize_base, quantized_bytes
from jaxevo.models.quantized import NF4_CODES, dequantize, quantize
from jaxevo.lora import LoraSection
from tests.conftest import forward, random_params, tiny_cfg
from tests.lora.test_factorised import TOKENS, _factorised
from tests.lora.test_train_lora import _run, frozen_base, lora_config
from tests.train.helpers import pref_records, sft_records
from jaxevo.train.builder import build

# Appendix E of Dettmers et al. 2023 (QLoRA), as printed there.
PAPER_NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
             -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
             0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
             0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0]


def test_nf4_code_book_is_the_papers():
    np.testing.assert_array_equal(NF4_CODES, np.asarray(PAPER_NF4, np.float32))


def _numpy_int8(w):  # w [L, E, F]: per output channel over the input axis
    s = np.abs(w).max(axis=1, keepdims=True) / 127.0
    return np.clip(np.round(w / s), -127, 127) * s, s


def _numpy_nf4(w):  # w [L, ...] flattened row-major per layer, blocks of 64, nearest code
    flat = w.reshape(w.shape[0], -1, 64)
    m = np.abs(flat).max(-1, keepdims=True)
    idx = np.abs(flat[..., None] / m[..., None] - NF4_CODES).argmin(-1)
    return (NF4_CODES[idx] * m).reshape(w.shape), m


def test_int8_and_nf4_round_trip_against_numpy():
    rng = np.random.RandomState(0)
    w = rng.standard_t(4, size=(3, 64, 96)).astype(np.float32) * 0.02  # heavy tails, like weights
    q8 = quantize(jnp.asarray(w), "int8", 1)
    d8 = np.asarray(dequantize(jax.tree.map(lambda x: x[1], q8), (64, 96), jnp.float32))
    ref8, s8 = _numpy_int8(w)
    np.testing.assert_allclose(d8, ref8[1], rtol=1e-6, atol=1e-9)
    assert np.all(np.abs(d8 - w[1]) <= s8[1] / 2 + 1e-9)  # half a step per output channel
    q4 = quantize(jnp.asarray(w), "nf4", 1)
    d4 = np.asarray(dequantize(q4, (64, 96), jnp.float32))  # all layers at once
    ref4, m4 = _numpy_nf4(w)
    np.testing.assert_allclose(d4, ref4, rtol=1e-6, atol=1e-9)
    # NF4's bound: half the widest gap between codes (-1 .. -0.696) times the block's absmax
    gap = np.diff(NF4_CODES).max() / 2
    err = np.abs(d4 - w).reshape(3, -1, 64)
    assert np.all(err <= gap * m4 + 1e-7)
    # bf16 compute: the dequantised weight is the f32 one rounded once
    np.testing.assert_array_equal(np.asarray(dequantize(q4, (64, 96), jnp.bfloat16)),
                                  d4.astype(jnp.bfloat16))
    # bytes: int8 1 byte/param + f32 scales per output channel; nf4 0.5 byte/param + f32 per 64
    n = w.size
    assert sum(x.nbytes for x in q8.values()) == n + 4 * 3 * 96
    assert sum(x.nbytes for x in q4.values()) == n // 2 + 4 * n // 64


@pytest.mark.parametrize("fmt", ["int8", "nf4"])
def test_quantized_base_forward_and_bytes(fmt):
    cfg = tiny_cfg("llama3")
    params = random_params(cfg)
    qbase = quantize_base(params, fmt, cfg)
    proj = sum(params["layers"][s][n].size for s, ns in
               (("attn", ("q_proj", "k_proj", "v_proj", "o_proj")),
                ("mlp", ("gate_proj", "up_proj", "down_proj"))) for n in ns)
    e, f, hd, kd = cfg.hidden_size, cfg.intermediate_size, cfg.num_heads * cfg.head_dim, \
        cfg.num_kv_heads * cfg.head_dim  # output channels of q, k, v, o, gate, up, down:
    n_scales = cfg.num_layers * (hd + 2 * kd + e + 2 * f + e) if fmt == "int8" else proj // 64
    per = 1 if fmt == "int8" else 0.5
    assert quantized_bytes(qbase) == proj * per + 4 * n_scales
    # the model on the quantised base (dequantised in its layers) is the model on dequantised
    # weights (bit for bit as a user's run compiles it: test_exact_base.py), close to, not, the base
    ours = _factorised(cfg, qbase, None, LoraSection(rank=1), TOKENS)
    np.testing.assert_allclose(ours, forward(cfg, dequantize_base(qbase, cfg), TOKENS), rtol=0,
                               atol=1e-6)
    assert 0 < np.abs(ours - forward(cfg, params, TOKENS)).max() < 0.5


def test_qlora_sft_learns_and_dpo_starts_at_zero_margin(tmp_path):
    pre = frozen_base()
    t = build(lora_config(tmp_path / "s", "steps=60", "optim.lr=1e-2", "lora.quantize_base=nf4",
                          "model.dtype=bfloat16"), pretrained=pre, records=sft_records(8))
    q = t.base["layers"]["attn"]["q_proj"]
    assert q["qvalue"].dtype == jnp.uint8  # held quantised only
    before = jax.tree.map(np.asarray, jax.device_get(t.base))
    state, hist = _run(t, 60)
    losses = [h["loss"] for h in hist]
    assert losses[0] > 5.0 and min(losses[-5:]) < 0.1, losses[::10]
    jax.tree.map(np.testing.assert_array_equal, before, jax.device_get(t.base))
    pre = dataclasses.replace(frozen_base())
    t = build(lora_config(tmp_path / "d", "steps=2", "objective.name=preference",
                          "lora.quantize_base=int8"), pretrained=pre, records=pref_records(8))
    _, hist = _run(t, 1)
    assert hist[0]["loss"] == pytest.approx(np.log(2), abs=1e-5)  # reference: the same int8 base
