"""The factorised LoRA path inside the layers (``x·W + s·dropout(x)·A·B``): equal to the merged
weights' forward, the base's with B = 0 (bit for bit as a user's run compiles it:
test_exact_base.py), and its dropout unbiased."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxevo.lora import LoraSection, init_adapters, merge
from jaxevo.lora.adapters import adapter_specs
from jaxevo.lora.quantize import model_variables
from jaxevo.models.lowrank import Adapted, LoraSpec, adapter_product, adapter_specs as einsums
from jaxevo.models.transformer import LORA_DROPOUT, Transformer, causal_mask, positions_from_valid
from tests.conftest import COMMON, forward, random_params, tiny_cfg

TOKENS = (np.arange(16, dtype=np.int32)[None] * 5) % COMMON["vocab_size"]  # [1, 16]


def _factorised(cfg, params, adapters, lcfg, toks, key=None):
    spec = LoraSpec(lcfg.scale, lcfg.dropout)
    return np.asarray(_factorised_logits(cfg, spec, model_variables(params, adapters), jnp.asarray(toks), key))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _factorised_logits(cfg, spec, variables, toks, key):
    valid = jnp.ones(toks.shape, jnp.int32)
    logits, _ = Transformer(cfg, spec).apply(variables, toks, positions_from_valid(valid), causal_mask(valid),
                                             rngs={LORA_DROPOUT: key} if key is not None else {})
    return logits


def _random_adapters(lcfg, cfg, seed=1):
    rng = np.random.RandomState(seed)
    return {t: {k: rng.normal(0, 0.05, shape).astype(np.float32) for k, (shape, _) in ab.items()}
            for t, ab in adapter_specs(lcfg, cfg).items()}


def test_einsum_split():
    assert einsums("bte,ehd->bthd") == ("bte,eR->btR", "btR,Rhd->bthd")
    assert einsums("bthd,hde->bte") == ("bthd,hdR->btR", "btR,Re->bte")
    assert einsums("btf,fe->bte") == ("btf,fR->btR", "btR,Re->bte")


@pytest.mark.parametrize("family", ["llama3", "qwen3", "gemma3"])
def test_factorised_equals_merged_and_zero_init_is_the_base(family):
    cfg = tiny_cfg(family)  # fp32 compute
    params = random_params(cfg)
    lcfg, toks = LoraSection(rank=4, alpha=8), TOKENS
    zero = init_adapters(lcfg, cfg, jax.random.key(0))
    # B = 0: the base's logits within 1e-6 at -O0 (bit for bit as a user's run compiles them:
    # test_exact_base.py)
    np.testing.assert_allclose(_factorised(cfg, params, zero, lcfg, toks),
                               forward(cfg, params, toks), rtol=0, atol=1e-6)
    ad = _random_adapters(lcfg, cfg)
    merged = forward(cfg, merge(params, ad, lcfg), toks)
    ours = _factorised(cfg, params, ad, lcfg, toks)
    assert np.abs(merged - forward(cfg, params, toks)).max() > 1e-2  # the adapters matter
    np.testing.assert_allclose(ours, merged, rtol=0, atol=2e-5)  # fp32 reassociation only


def test_dropout_zero_ignores_the_key_and_dropout_is_unbiased():
    cfg = tiny_cfg("llama3")
    params = random_params(cfg)
    toks = (np.arange(16, dtype=np.int32)[None] * 3) % cfg.vocab_size
    ad = _random_adapters(LoraSection(rank=4, alpha=8), cfg)
    l0 = LoraSection(rank=4, alpha=8)
    np.testing.assert_array_equal(_factorised(cfg, params, ad, l0, toks, jax.random.key(5)),
                                  _factorised(cfg, params, ad, l0, toks))
    l1 = LoraSection(rank=4, alpha=8, dropout=0.3)
    a, b = (_factorised(cfg, params, ad, l1, toks, jax.random.key(k)) for k in (1, 2))
    assert np.abs(a - b).max() > 1e-3  # the key matters with dropout
    np.testing.assert_array_equal(a, _factorised(cfg, params, ad, l1, toks, jax.random.key(1)))

    # One adapted projection: E[scale · dropout(x) · A · B] = scale · x · A · B (inverted dropout).
    rng = np.random.RandomState(0)
    x = jnp.asarray(rng.normal(size=(2, 5, 16)), jnp.float32)
    A = jnp.asarray(rng.normal(size=(16, 4)), jnp.float32)
    B = jnp.asarray(rng.normal(size=(4, 3, 2)), jnp.float32)
    spec, p, n = "bte,ehd->bthd", 0.3, 4000
    w = Adapted(None, A, B, LoraSpec(2.0, p), None)
    exact = np.asarray(adapter_product(x, w, spec))
    np.testing.assert_allclose(exact, 2.0 * np.einsum("bte,er,rhd->bthd", x, A, B), rtol=1e-5,
                               atol=1e-5)
    draws = np.stack([np.asarray(adapter_product(x, w._replace(key=k), spec))
                      for k in jax.random.split(jax.random.key(0), n)])
    mean, se = draws.mean(0), draws.std(0) / np.sqrt(n)
    assert np.all(np.abs(mean - exact) < 5 * se + 1e-6), np.abs(mean - exact).max()
    # a dropout without the 1/(1-p) rescaling would sit 30 % off: far outside the interval
    assert np.all(np.abs((1 - p) * mean - exact)[np.abs(exact) > 5] > 5 * se[np.abs(exact) > 5])


def _grad_and_temps(cfg, params, lcfg, adapters, toks):
    """(∂Σlogits/∂params or ∂/∂adapters, the compiled gradient's temp bytes); adapters=None: full."""
    valid = jnp.ones(toks.shape, jnp.int32)
    pos, mask = positions_from_valid(valid), causal_mask(valid)
    if adapters is None:
        f, arg = (lambda p: Transformer(cfg).apply({"params": p}, toks, pos, mask)[0].sum()), params
    else:
        f, arg = (lambda a: Transformer(cfg, LoraSpec(lcfg.scale, 0.0)).apply(
            model_variables(params, a), toks, pos, mask)[0].sum()), adapters
    g = jax.jit(jax.grad(f))
    return g(arg), g.lower(arg).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("remat", ["dots_no_batch", "dots"])
def test_dot_saving_remat_keeps_one_activation_per_adapted_projection(remat):
    """Under a dot-saving remat policy the LoRA backward holds about what full fine-tuning holds:
    the adapted output (x·W + x·A·B) is saved by name, not its two dot outputs. Before the name,
    the tiny model below compiled to 1.14x full fine-tuning's temps under dots_no_batch (and
    SmolLM2-135M's DPO step to 1.27x, docs/lora.md); with it, 1.003x. The gradients are those
    of the model without remat."""
    cfg, plain = tiny_cfg("llama3", remat=remat), tiny_cfg("llama3")
    params = random_params(cfg)
    lcfg = LoraSection(rank=4, alpha=8)
    ad = _random_adapters(lcfg, cfg)
    toks = jnp.asarray(np.random.RandomState(0).randint(0, cfg.vocab_size, (8, 256)), jnp.int32)
    _, full_temps = _grad_and_temps(cfg, params, lcfg, None, toks)
    grads, lora_temps = _grad_and_temps(cfg, params, lcfg, ad, toks)
    assert lora_temps < 1.05 * full_temps, (lora_temps, full_temps)
    ref, _ = _grad_and_temps(plain, params, lcfg, ad, toks)
    for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-4, atol=5e-5)  # fp32 order
