"""Core model checks that run without torch: golden logits, padding, cache, errors."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxevo.errors import UnsupportedModelError, WeightsError
from jaxevo.models.config import ModelConfig
from jaxevo.models import decode
from jaxevo.models.layers import attend_masked
from jaxevo.models.transformer import (Transformer, causal_mask, lm_head_weight, logits_from_hidden,
                                       positions_from_valid, visible_mask)
from jaxevo.weights.convert import load_params
from jaxevo.weights.source import DictSource
from tests.conftest import (GOLDEN_TOKENS, GOLDEN_VALID, TINY_HF, forward, numpy_hf_weights,
                            random_params, tiny_cfg)

GOLDEN = np.load(Path(__file__).parents[1] / "golden" / "tiny_logits.npz")


def test_golden_logits_match_transformers(family):
    """Logits equal transformers' (stored once by tests/golden/make_model_goldens.py), f32 1e-5."""
    cfg = tiny_cfg(family)
    params = load_params(DictSource(numpy_hf_weights(cfg)), cfg)
    out = forward(cfg, params, GOLDEN_TOKENS, GOLDEN_VALID)
    ref = GOLDEN[family]
    assert np.abs(out[0] - ref[0]).max() <= 1e-5
    assert np.abs(out[1, 4:] - ref[1, 4:]).max() <= 1e-5  # padded positions are not compared


def test_left_padding_does_not_change_real_tokens():
    cfg = tiny_cfg("llama3")
    params = random_params(cfg)
    tok = np.array([[5, 6, 7, 8]])
    alone = forward(cfg, params, tok)
    padded = forward(cfg, params, np.array([[0, 0, 5, 6, 7, 8]]), np.array([[0, 0, 1, 1, 1, 1]]))
    np.testing.assert_allclose(padded[0, 2:], alone[0], atol=1e-5)


@pytest.mark.parametrize("matmul_dtype", [None, "float32"])
def test_kv_cache_decode_equals_full_forward(family, matmul_dtype):
    """The decode forward (prepared weights, per-layer cache): prefill 5 tokens in two chunks,
    then decode 3 one at a time (one shared slot, then a slot per row): same logits as one
    teacher-forced forward."""
    cfg = tiny_cfg(family)
    params = random_params(cfg)
    tok = jnp.asarray(np.random.RandomState(1).randint(0, 128, (2, 8)))
    full = forward(cfg, params, tok)
    w, s = decode.prepare_weights(params, cfg=cfg, matmul_dtype=matmul_dtype), 8
    cache = decode.init_cache(cfg, 2, s)
    kv_valid = jnp.zeros((2, s), bool).at[:, :5].set(True)
    for a, b in ((0, 3), (3, 5)):
        pos = jnp.broadcast_to(jnp.arange(a, b), (2, b - a))
        hidden, cache = decode.forward(cfg, w, cache, tok[:, a:b], pos, jnp.int32(a), visible_mask(kv_valid, pos))
        np.testing.assert_allclose(decode.logits(cfg, w, hidden), full[:, a:b], atol=1e-5)
    for t in range(5, 8):
        kv_valid = kv_valid.at[:, t].set(True)
        slot = jnp.int32(t) if t < 7 else jnp.full((2,), t, jnp.int32)
        logits, cache = decode.decode_step(cfg, w, cache, tok[:, t], jnp.full((2,), t), slot,
                                           visible_mask(kv_valid, jnp.full((2, 1), t))[:, 0])
        np.testing.assert_allclose(logits, full[:, t], atol=1e-5)


@pytest.mark.parametrize("family", ["llama3", "gemma3"])  # gemma3: embeddings scaled by sqrt(E)
def test_embedding_kept_as_bits_gives_the_same_rows(family):
    """In bf16 the decode layout may keep the embedding as its uint16 bit patterns (on CPUs, where
    XLA would otherwise widen the whole table to f32 in every decode call): the table is the
    params' own, rounded to the compute dtype, and a prefill's hidden states are the same bits."""
    cfg = tiny_cfg(family, dtype="bfloat16")
    params = random_params(cfg)
    bits = decode.prepare_weights(params, cfg=cfg, embedding_bits=True)
    plain = decode.prepare_weights(params, cfg=cfg, embedding_bits=False)
    assert bits["embedding"].dtype == jnp.uint16 and plain["embedding"].dtype == params["embedding"].dtype
    np.testing.assert_array_equal(
        np.asarray(jax.lax.bitcast_convert_type(bits["embedding"], jnp.bfloat16).astype(jnp.float32)),
        np.asarray(params["embedding"].astype(jnp.bfloat16).astype(jnp.float32)))
    tok = jnp.asarray(np.random.RandomState(2).randint(0, cfg.vocab_size, (2, 6)))
    pos = jnp.broadcast_to(jnp.arange(6), (2, 6))
    visible = visible_mask(jnp.ones((2, 6), bool), pos)
    outs = [decode.forward(cfg, w, decode.init_cache(cfg, 2, 6), tok, pos, jnp.int32(0), visible)[0]
            for w in (bits, plain)]
    np.testing.assert_array_equal(np.asarray(outs[0].astype(jnp.float32)), np.asarray(outs[1].astype(jnp.float32)))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_heads_first_attention_gives_the_same_values(family, dtype):
    """The decode forward's prefill attends with the heads moved before the tokens
    (`attend_masked(heads_first=True)`, faster on XLA:CPU); its outputs equal the training
    forward's form, padding rows and sliding windows included."""
    cfg = tiny_cfg(family, dtype=dtype)
    rng = np.random.RandomState(3)
    b, t = 2, 9
    q = jnp.asarray(rng.normal(size=(b, t, cfg.num_heads, cfg.head_dim)), cfg.dtype)
    k, v = (jnp.asarray(rng.normal(size=(b, t, cfg.num_kv_heads, cfg.head_dim)), cfg.dtype) for _ in range(2))
    mask = causal_mask(jnp.ones((b, t), jnp.int32).at[0, :3].set(0), sliding_window=cfg.sliding_window)
    plain, first = (np.asarray(attend_masked(cfg, q, k, v, mask, heads_first=h).astype(jnp.float32))
                    for h in (False, True))
    # the same values to the products' summation order: 1e-6 in f32 (outputs are O(1)), one
    # rounding in bf16
    if dtype == "float32":
        np.testing.assert_allclose(first, plain, rtol=0, atol=1e-6)
    else:
        np.testing.assert_allclose(first, plain, rtol=2.0 ** -8, atol=0)


def test_decode_forward_computes_rope_once():
    """XLA:CPU fuses an elementwise producer into each of its consumers: without
    `layers.computed_once` an unrolled decode forward computed RoPE's cos and sin again for the
    queries and the keys of every layer (docs/benchmarks.md). In the compiled prefill the cosines
    do not grow with the depth (Gemma 3: a local and a global RoPE)."""
    for family in ("llama3", "gemma3"):
        counts = []
        for depth in (1, 2):
            hf = dict(TINY_HF[family])
            hf["num_hidden_layers"] *= depth
            hf["layer_types"] = hf.get("layer_types", []) * depth or None
            cfg = ModelConfig.from_hf(hf, dtype="bfloat16")
            w = decode.prepare_weights(random_params(cfg), cfg=cfg)
            tok = jnp.zeros((2, 6), jnp.int32)
            pos = jnp.broadcast_to(jnp.arange(6), (2, 6))
            visible = visible_mask(jnp.ones((2, 6), bool), pos)

            def prefill(w, tok, pos, visible, cfg=cfg):
                return decode.forward(cfg, w, decode.init_cache(cfg, 2, 6), tok, pos, jnp.int32(0), visible)[0]
            counts.append(jax.jit(prefill).lower(w, tok, pos, visible).compile().as_text().count(" cosine("))
        assert counts[0] == counts[1], (family, counts)


def test_decode_forward_traces_one_layer_program_for_all_layers():
    """The decode forward's layers share one traced program (`decode._layer`, inlined by XLA):
    tracing each of a real model's unrolled layers took seconds of Python in every process's
    first decode calls. Gemma 3's local and global layers share it too."""
    cfg = tiny_cfg("gemma3", dtype="bfloat16")
    assert cfg.num_layers >= 3 and len(set(cfg.sliding_layers)) == 2
    w = decode.prepare_weights(random_params(cfg), cfg=cfg)
    pos = jnp.broadcast_to(jnp.arange(6), (2, 6))
    decode._layer.clear_cache()
    decode.forward(cfg, w, decode.init_cache(cfg, 2, 6), jnp.zeros((2, 6), jnp.int32), pos, jnp.int32(0),
                   visible_mask(jnp.ones((2, 6), bool), pos))
    assert decode._layer._cache_size() == 1


def test_prepared_weights_one_small_program_for_all_layers():
    """The decode layout is made by one per-layer program, compiled once for every layer (not a
    program over all layers: seconds of compile per params dtype on a real model), and equals the
    whole layout traced as one program (what `jaxevo plan` lowers), bit for bit."""
    cfg = tiny_cfg("qwen2")  # q/k/v biases: every branch of the layout
    params = random_params(cfg)
    assert cfg.num_layers >= 2
    decode._prepare_layer.clear_cache()
    w = decode.prepare_weights(params, cfg=cfg, matmul_dtype="float32")
    assert decode._prepare_layer._cache_size() == 1
    whole = jax.jit(decode.prepare_weights, static_argnames=("cfg", "matmul_dtype"))(
        params, cfg=cfg, matmul_dtype="float32")
    assert jax.tree.structure(w) == jax.tree.structure(whole)
    for a, b in zip(jax.tree.leaves(w), jax.tree.leaves(whole)):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    layer1 = w["layers"][1]["mlp"]["gate_up"]  # [E, 2F]: gate then up of layer 1
    ref = np.concatenate([np.asarray(params["layers"]["mlp"]["gate_proj"][1].astype(cfg.dtype)),
                          np.asarray(params["layers"]["mlp"]["up_proj"][1].astype(cfg.dtype))], 1)
    np.testing.assert_array_equal(np.asarray(layer1), ref.astype(np.float32))


def test_return_hidden_gives_logits_through_head():
    cfg = tiny_cfg("llama3")
    params = random_params(cfg)
    tok = jnp.asarray(GOLDEN_TOKENS)
    valid = jnp.ones_like(tok)
    hidden, _ = Transformer(cfg).apply({"params": params}, tok, positions_from_valid(valid),
                                       causal_mask(valid), return_hidden=True)
    assert hidden.shape == (2, 12, cfg.hidden_size)
    logits = logits_from_hidden(hidden, lm_head_weight(params, cfg), cfg)
    np.testing.assert_allclose(logits, forward(cfg, params, tok), atol=1e-5)


def test_bf16_compute_close_to_f32():
    cfg = tiny_cfg("llama3")
    params = random_params(cfg)
    ref = forward(cfg, params, GOLDEN_TOKENS)
    out = forward(cfg.replace(dtype="bfloat16"), params, GOLDEN_TOKENS)
    assert out.dtype == np.float32  # logits always f32
    assert np.abs(out - ref).max() < 0.05 * np.abs(ref).max()


@pytest.mark.parametrize("remat", ["full", "dots"])
def test_remat_same_loss_and_grads(remat):
    cfg = tiny_cfg("llama3")
    params = random_params(cfg)
    tok = jnp.asarray(GOLDEN_TOKENS)
    valid = jnp.ones_like(tok)

    def loss(p, c):
        logits, _ = Transformer(c).apply({"params": p}, tok, positions_from_valid(valid), causal_mask(valid))
        return jnp.mean(jax.nn.logsumexp(logits, -1))
    step = jax.jit(jax.value_and_grad(loss), static_argnums=1)  # remat as a train step compiles it
    l0, g0 = step(params, cfg)
    l1, g1 = step(params, cfg.replace(remat=remat))
    np.testing.assert_allclose(l0, l1, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), g0, g1)


def test_sliding_window_masks_old_keys():
    valid = jnp.ones((1, 6), jnp.int32)
    m = causal_mask(valid, sliding_window=2)[0]
    assert bool(m[5, 4]) and bool(m[5, 5]) and not bool(m[5, 3])


def test_unsupported_architecture_is_a_clear_error():
    with pytest.raises(UnsupportedModelError, match="gemma"):
        ModelConfig.from_hf(dict(TINY_HF["llama3"], model_type="gemma"))
    with pytest.raises(UnsupportedModelError, match="yarn"):
        ModelConfig.from_hf(dict(TINY_HF["llama3"], rope_scaling={"rope_type": "yarn", "factor": 2.0}))


def test_missing_and_mismatched_tensors_are_clear_errors():
    cfg = tiny_cfg("llama3")
    w = numpy_hf_weights(cfg)
    del w["model.layers.1.mlp.up_proj.weight"]
    with pytest.raises(WeightsError, match="missing.*model.layers.1.mlp.up_proj.weight"):
        load_params(DictSource(w), cfg)
    w = numpy_hf_weights(cfg)
    w["model.norm.weight"] = np.ones(63, np.float32)
    with pytest.raises(WeightsError, match=r"model.norm.weight is \(63,\), config needs \(64,\)"):
        load_params(DictSource(w), cfg)


def test_num_params_matches_tree():
    for family in TINY_HF:
        cfg = tiny_cfg(family)
        n = sum(x.size for x in jax.tree.leaves(random_params(cfg)))
        assert cfg.num_params() == n
