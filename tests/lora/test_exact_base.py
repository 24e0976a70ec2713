"""A fresh LoRA model, and the model on a quantised base, compute exactly what their base
computes: bit-for-bit equalities of two different programs. They hold as the compiler's default
optimisations build the two programs, so this module compiles as a user's run does
(tests/conftest.py); the rest of tests/lora checks the same paths at -O0 within tolerances."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxevo.lora import LoraSection, init_adapters
from jaxevo.lora.quantize import dequantize_base, quantize_base
from tests.conftest import forward, random_params, tiny_cfg
from tests.lora.test_factorised import TOKENS, _factorised

pytestmark = pytest.mark.optimized_compile


@pytest.mark.parametrize("family", ["llama3", "qwen3", "gemma3"])
def test_zero_init_adapters_give_the_base_bit_for_bit(family):
    cfg = tiny_cfg(family)  # fp32 compute
    params, lcfg = random_params(cfg), LoraSection(rank=4, alpha=8)
    zero = init_adapters(lcfg, cfg, jax.random.key(0))  # B = 0
    np.testing.assert_array_equal(_factorised(cfg, params, zero, lcfg, TOKENS),
                                  forward(cfg, params, TOKENS))


@pytest.mark.parametrize("fmt", ["int8", "nf4"])
def test_quantised_base_is_its_dequantised_weights_bit_for_bit(fmt):
    cfg = tiny_cfg("llama3")
    qbase = quantize_base(random_params(cfg), fmt, cfg)
    np.testing.assert_array_equal(_factorised(cfg, qbase, None, LoraSection(rank=1), TOKENS),
                                  forward(cfg, dequantize_base(qbase, cfg), TOKENS))
