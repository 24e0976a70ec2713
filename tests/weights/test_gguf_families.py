"""GGUF import of the qwen3, gemma3 and phi3 architectures (needs torch): a tiny transformers model
is written the way llama.cpp's converter writes it (its tensor names, Gemma's norms stored plus
one, Phi-3's fused tensors and longrope factor tensors, matrices quantised to Q8_0), then imported.

References: for qwen3 and gemma3, transformers' own GGUF loader on the same file (the same
dequantised weights: logits within 1e-4) and the model the file was made from (within what Q8_0
moves transformers' own logits, plus 1e-4). transformers' loader ignores Phi-3's longrope and
window, so the phi3 file keeps f32 matrices and is checked against its source model at 1e-4. The K-quants (Q4_K, Q6_K: gguf cannot write them) are exercised by
the real Gemma 3 270M file (tests/models/test_gemma3_270m.py).
"""

import gguf
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from jaxevo.models.config import ModelConfig  # noqa: E402
from jaxevo.weights.convert import load_params  # noqa: E402
from jaxevo.weights.gguf import GGUFSource, gguf_hf_config  # noqa: E402
from tests.conftest import COMMON, GOLDEN_TOKENS, GOLDEN_VALID, TINY_HF, forward  # noqa: E402

# Gemma 3 as llama.cpp assumes it (nothing else is in the file): a global layer every sixth,
# local RoPE base 1e4, q scaled by 1/sqrt(head_dim); head_dim 256 as in every Gemma 3, which is
# also what transformers' GGUF loader assumes for query_pre_attn_scalar.
GEMMA3 = dict(COMMON, model_type="gemma3_text", architectures=["Gemma3ForCausalLM"], num_hidden_layers=6,
              num_key_value_heads=1, head_dim=256, query_pre_attn_scalar=256, sliding_window=4,
              rope_theta=1000000.0, rope_local_base_freq=10000.0, hidden_activation="gelu_pytorch_tanh",
              tie_word_embeddings=True)
# transformers' Qwen3 GGUF loader ignores attention.key_length and assumes Qwen3's head_dim, 128.
QWEN3 = dict(TINY_HF["qwen3"], head_dim=128)
FAMILIES = {"qwen3": QWEN3, "gemma3": GEMMA3, "phi3": TINY_HF["phi3"]}

BLOCK = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
         "self_attn.qkv_proj": "attn_qkv", "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate",
         "mlp.up_proj": "ffn_up", "mlp.gate_up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
         "input_layernorm": "attn_norm", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm"}
NORMS = {  # the norm after attention: llama.cpp's ffn_norm, except in Gemma
    "gemma3": {"post_attention_layernorm": "post_attention_norm", "pre_feedforward_layernorm": "ffn_norm",
               "post_feedforward_layernorm": "post_ffw_norm"},
    "qwen3": {"post_attention_layernorm": "ffn_norm"}, "phi3": {"post_attention_layernorm": "ffn_norm"}}
TOP = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
       "lm_head.weight": "output.weight"}


def llama_cpp_name(name: str, arch: str) -> str:
    if name in TOP:
        return TOP[name]
    _, _, i, rest = name.split(".", 3)
    module, kind = rest.rsplit(".", 1)
    return f"blk.{i}.{NORMS[arch].get(module) or BLOCK[module]}.{kind}"


def write_llama_cpp_gguf(path, arch: str, hf: dict, model) -> None:
    w = gguf.GGUFWriter(str(path), arch)
    w.add_vocab_size(hf["vocab_size"])
    w.add_block_count(hf["num_hidden_layers"])
    w.add_context_length(hf["max_position_embeddings"])
    w.add_embedding_length(hf["hidden_size"])
    w.add_feed_forward_length(hf["intermediate_size"])
    w.add_head_count(hf["num_attention_heads"])
    w.add_head_count_kv(hf["num_key_value_heads"])
    head_dim = hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"]
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_layer_norm_rms_eps(hf["rms_norm_eps"])
    w.add_rope_freq_base(hf.get("rope_theta", 10000.0))
    if hf.get("sliding_window"):
        w.add_sliding_window(hf["sliding_window"])
    if arch == "phi3":
        rope = model.config.rope_parameters
        w.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])
        w.add_rope_scaling_attn_factors(model.model.rotary_emb.attention_scaling)
        for kind in ("long", "short"):
            w.add_tensor(f"rope_factors_{kind}.weight", np.asarray(rope[f"{kind}_factor"], np.float32))
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and hf["tie_word_embeddings"]:
            continue  # llama.cpp writes no output.weight for tied embeddings
        x = t.float().numpy()
        if arch == "gemma3" and name.endswith("norm.weight"):
            x = x + 1.0  # llama.cpp's Gemma converter stores 1 + w
        if x.ndim == 2 and arch != "phi3":  # matrices quantised like a real file's
            w.add_tensor(llama_cpp_name(name, arch), gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q8_0),
                         raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(llama_cpp_name(name, arch), x)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _logits(model, tokens, valid):
    with torch.no_grad():
        return model(torch.tensor(tokens, dtype=torch.long), attention_mask=torch.tensor(valid)).logits.numpy()


@pytest.mark.torch
@pytest.mark.parametrize("arch", sorted(FAMILIES))
def test_llama_cpp_file_imports_with_transformers_logits(arch, tmp_path):
    hf = FAMILIES[arch]
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**hf)).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.add_(torch.randn_like(p) * 0.1)
    path = tmp_path / f"{arch}.gguf"
    write_llama_cpp_gguf(path, arch, hf, model)

    config = gguf_hf_config(path)
    cfg = ModelConfig.from_hf(config)
    want = ModelConfig.from_hf(hf)
    # float32 metadata: rope parameters equal to float32 precision, everything else exactly
    assert (cfg.rope_scaling is None) == (want.rope_scaling is None)
    for (k, a), (k2, b) in zip(cfg.rope_scaling or (), want.rope_scaling or ()):
        assert k == k2 and a == (pytest.approx(b, rel=1e-6) if k != "rope_type" else b), k
    unset = dict(bos_token_id=None, eos_token_id=None, pad_token_id=None, max_position_embeddings=0, rope_scaling=None)
    assert cfg.replace(**unset) == want.replace(**unset)
    ours = forward(cfg, load_params(GGUFSource(path), cfg), GOLDEN_TOKENS, GOLDEN_VALID)
    mask = GOLDEN_VALID.astype(bool)
    source = _logits(model, GOLDEN_TOKENS, GOLDEN_VALID)
    if arch == "phi3":
        assert np.abs(ours - source)[mask].max() <= 1e-4
        return
    ref = _logits(transformers.AutoModelForCausalLM.from_pretrained(
        str(tmp_path), gguf_file=path.name, dtype=torch.float32).eval(), GOLDEN_TOKENS, GOLDEN_VALID)
    assert np.abs(ours - ref)[mask].max() <= 1e-4
    assert (ours.argmax(-1) == ref.argmax(-1))[mask].all()
    quantisation = np.abs(ref - source)[mask].max()
    assert 0 < quantisation and np.abs(ours - source)[mask].max() <= quantisation + 1e-4
