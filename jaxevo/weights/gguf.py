"""llama.cpp GGUF checkpoints, read without torch.

A `.gguf` file carries three things jaxevo needs, each exposed here in Hugging Face form so the
rest of the code never sees llama.cpp conventions:

* the tensors -> `GGUFSource`, a `TensorSource` under transformers Llama state-dict names, each
  tensor dequantized to float32 only when asked for (torch layout [out, in]);
* the hyper-parameters -> `gguf_hf_config(path)`, a transformers `config.json` dict;
* the tokenizer -> `gguf_tokenizer.gguf_tokenizer(path)`, a `PreTrainedTokenizerFast`.

Supported `general.architecture`s: "llama" (Llama 1/2/3, SmolLM, TinyLlama, Mistral -- whose GGUFs
say "llama"), "qwen2", "qwen3", "gemma3" (text) and "phi3". llama.cpp's converter changes a few
tensors, undone here: Llama's q/k rows are permuted, Gemma's norm weights are stored plus one,
Phi-3's longrope factors become tensors.
"""

from __future__ import annotations

import functools
import math
import os
import re
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from jaxevo.errors import UnsupportedModelError, WeightsError

_HF_ARCH = {"llama": ("llama", "LlamaForCausalLM"), "qwen2": ("qwen2", "Qwen2ForCausalLM"),
            "qwen3": ("qwen3", "Qwen3ForCausalLM"), "gemma3": ("gemma3_text", "Gemma3ForCausalLM"),
            "phi3": ("phi3", "Phi3ForCausalLM")}
SUPPORTED_ARCHS = tuple(_HF_ARCH)

# llama.cpp tensor name -> transformers name.
_TOP_LEVEL = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q_norm": "self_attn.q_norm",  # Qwen3, Gemma 3
    "attn_k_norm": "self_attn.k_norm",
}
# Where an architecture names things its own way.
_ARCH_BLOCK = {
    # Gemma: ffn_norm is the norm before the MLP; the two post-norms have their own names.
    "gemma3": {"ffn_norm": "pre_feedforward_layernorm", "post_attention_norm": "post_attention_layernorm",
               "post_ffw_norm": "post_feedforward_layernorm"},
    # Phi-3 keeps its fused tensors: q/k/v in attn_qkv, gate and up stacked in ffn_up.
    "phi3": {"attn_qkv": "self_attn.qkv_proj", "ffn_up": "mlp.gate_up_proj"},
}
_BLOCK_RE = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")
# Tensors with no transformers counterpart: Llama 3.1+ RoPE factors (`gguf_hf_config` turns them
# back into `rope_scaling`) and the precomputed rotary tables some old converters wrote.
# Phi-3's longrope factors are tensors (`gguf_hf_config` reads them back into `rope_scaling`).
_IGNORED_RE = re.compile(r"rope_freqs\.weight|blk\.\d+\.attn_rot_embd(\.weight)?|rope_factors_(long|short)\.weight")


def _hf_name(gguf_name: str, arch: str = "llama") -> str | None:
    if gguf_name in _TOP_LEVEL:
        return _TOP_LEVEL[gguf_name]
    m = _BLOCK_RE.fullmatch(gguf_name)
    block = {**_BLOCK, **_ARCH_BLOCK.get(arch, {})}
    if m and m.group(2) in block:
        return f"model.layers.{m.group(1)}.{block[m.group(2)]}.{m.group(3)}"
    return None


# ---------------------------------------------------------------------------------- reading


@functools.lru_cache(maxsize=2)
def _reader_cached(path: str, mtime_ns: int, size: int):
    try:
        return gguf.GGUFReader(path, "r")
    except Exception as e:  # bad magic, truncated file, unknown GGUF version...
        raise WeightsError(
            f"{path} is not a readable GGUF file ({type(e).__name__}: {e}); expected a llama.cpp "
            "`.gguf` checkpoint"
        ) from e


def _open(path: str | os.PathLike):
    """A `gguf.GGUFReader` for `path`, shared between calls (parsing the metadata of a 49k-token
    vocabulary takes seconds, and the source, config and tokenizer all need it)."""
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise WeightsError(f"GGUF file not found: {path}")
    st = p.stat()
    return _reader_cached(str(p), st.st_mtime_ns, st.st_size)


_MISSING = object()


def _meta(reader, key: str, default: Any = _MISSING) -> Any:
    """The metadata value `key` as a Python value (str, int, float, bool or list)."""
    field = reader.fields.get(key)
    if field is None:
        if default is _MISSING:
            raise WeightsError(f"GGUF metadata key {key!r} is missing; the file looks incomplete")
        return default
    return field.contents()


def _architecture(reader, path) -> str:
    arch = _meta(reader, "general.architecture", None)
    if arch not in SUPPORTED_ARCHS:
        raise UnsupportedModelError(
            f"{Path(path).name}: GGUF architecture {arch!r} is not supported; jaxevo imports "
            f"{list(SUPPORTED_ARCHS)} GGUF files (Mistral GGUFs say 'llama'). Use the model's "
            "Hugging Face safetensors directory instead if its model_type is supported."
        )
    if _meta(reader, f"{arch}.expert_count", 0):
        raise UnsupportedModelError(
            f"{Path(path).name}: mixture-of-experts GGUF ({arch}.expert_count="
            f"{_meta(reader, f'{arch}.expert_count')}) is not supported"
        )
    return arch


def _head_counts(reader, arch: str) -> tuple[int, int]:
    n_head = _meta(reader, f"{arch}.attention.head_count")
    n_kv = _meta(reader, f"{arch}.attention.head_count_kv", n_head)
    # Some files store one count per layer; jaxevo's model needs them uniform.
    counts = []
    for v, what in ((n_head, "head_count"), (n_kv, "head_count_kv")):
        if isinstance(v, list):
            if len(set(v)) != 1:
                raise UnsupportedModelError(f"per-layer attention.{what} {v} is not supported")
            v = v[0]
        counts.append(int(v))
    return counts[0], counts[1]


def unpermute_rope_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation.

    llama.cpp's converter reorders each head's rows of q_proj/k_proj from transformers' "rotate
    half" RoPE layout to its interleaved one (pairs (i, i + d/2) become adjacent rows). This is
    the exact inverse, so the result equals the transformers state dict.

    w: [out, in] weight or [out] bias, out = n_heads * head_dim. Returns the same shape.
    """
    out = w.shape[0]
    rest = w.shape[1:]
    return w.reshape(n_heads, out // n_heads // 2, 2, *rest).swapaxes(1, 2).reshape(w.shape)


# ---------------------------------------------------------------------------------- tensors


class GGUFSource:
    """A `TensorSource` over a `.gguf` file, under transformers Llama names.

    Keys (torch layout):
      model.embed_tokens.weight                          [vocab, hidden]
      model.layers.{i}.self_attn.q_proj.weight           [heads*head_dim, hidden]
      model.layers.{i}.self_attn.{k,v}_proj.weight       [kv_heads*head_dim, hidden]
      model.layers.{i}.self_attn.{q,k,v}_proj.bias       [out]  only if the file has them (Qwen2)
      model.layers.{i}.self_attn.o_proj.weight           [hidden, heads*head_dim]
      model.layers.{i}.mlp.{gate,up}_proj.weight         [intermediate, hidden]
      model.layers.{i}.mlp.down_proj.weight              [hidden, intermediate]
      model.layers.{i}.{input,post_attention}_layernorm.weight, model.norm.weight   [hidden]
      lm_head.weight                                     [vocab, hidden]  only if the file has
                                                         `output.weight` (else tied embeddings)

    `get` dequantizes one tensor to float32 at a time; nothing is read at construction except the
    header, so the 4-bit file stays 4-bit on disk until the converter asks for each tensor.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._reader = _open(path)
        self.arch = _architecture(self._reader, path)
        self.n_heads, self.n_kv_heads = _head_counts(self._reader, self.arch)
        # llama.cpp permutes Q/K only for its "llama" architecture; the others keep the HF order.
        self._permuted = self.arch == "llama"
        self._tensors = {}
        unknown = []
        for t in self._reader.tensors:
            name = _hf_name(t.name, self.arch)
            if name is not None:
                self._tensors[name] = t
            elif not _IGNORED_RE.fullmatch(t.name):
                unknown.append(t.name)
        if unknown:
            raise UnsupportedModelError(
                f"{self.path.name}: tensors with no transformers counterpart: {unknown[:8]}"
                f"{' ...' if len(unknown) > 8 else ''}; this {self.arch!r} variant is not supported"
            )

    def keys(self):
        return self._tensors.keys()

    def shape(self, name: str) -> tuple[int, ...]:
        # GGUF lists dimensions fastest-first (ne0 = in); torch lists them slowest-first.
        return tuple(int(d) for d in reversed(self._tensor(name).shape))

    def get(self, name: str) -> np.ndarray:
        """Tensor `name` as float32 in torch layout (see the class docstring for shapes)."""
        t = self._tensor(name)
        try:
            w = gguf.quants.dequantize(t.data, t.tensor_type)
        except NotImplementedError as e:
            raise UnsupportedModelError(
                f"{self.path.name}: tensor {t.name!r} ({name}) is stored as {t.tensor_type.name}, "
                f"which gguf {getattr(gguf, '__version__', '')} cannot dequantize; use a GGUF "
                "quantised as F32/F16/BF16/Q8_0/Q4_0/Q4_1/Q5_*/Q*_K, or the safetensors checkpoint"
            ) from e
        # np.array copies: F32 tensors come back as views into the memory-mapped file.
        w = np.array(w, dtype=np.float32).reshape(self.shape(name))
        if self.arch == "gemma3" and name.endswith("norm.weight"):
            w = w - 1.0  # llama.cpp stores Gemma's (1 + w) norms as 1 + w
        if self._permuted:
            if name.endswith(("q_proj.weight", "q_proj.bias")):
                w = unpermute_rope_rows(w, self.n_heads)
            elif name.endswith(("k_proj.weight", "k_proj.bias")):
                w = unpermute_rope_rows(w, self.n_kv_heads)
        return w

    def _tensor(self, name: str):
        try:
            return self._tensors[name]
        except KeyError:
            raise KeyError(f"{name!r} is not in {self.path.name}") from None


# ---------------------------------------------------------------------------------- config


def _llama3_rope_factors(theta, head_dim, factor, low, high, original) -> np.ndarray:
    """The per-frequency divisors llama.cpp stores as `rope_freqs.weight` for Llama 3.1+ RoPE."""
    freqs = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    wavelen = 2 * math.pi / freqs
    smooth = (original / wavelen - low) / (high - low)
    mid = 1.0 / ((1 - smooth) / factor + smooth)
    return np.where(wavelen < original / high, 1.0, np.where(wavelen > original / low, factor, mid))


def _rope_scaling(reader, arch: str, head_dim: int, theta: float) -> dict | None:
    kind = _meta(reader, f"{arch}.rope.scaling.type", None)
    factor = _meta(reader, f"{arch}.rope.scaling.factor", None)
    if kind is None and _meta(reader, f"{arch}.rope.scale_linear", None):  # older files
        kind, factor = "linear", _meta(reader, f"{arch}.rope.scale_linear")
    if kind not in (None, "none"):
        out = {"rope_type": kind, "factor": float(factor)}
        orig = _meta(reader, f"{arch}.rope.scaling.original_context_length", None)
        if orig:
            out["original_max_position_embeddings"] = int(orig)
        return out
    rope_freqs = next((t for t in reader.tensors if t.name == "rope_freqs.weight"), None)
    if rope_freqs is None:
        return None
    # Llama 3.1/3.2 keep their scaling only as the factor table; recover the HF parameters by
    # matching the table against the only values Meta has shipped (low 1, high 4, 8192 context).
    table = gguf.quants.dequantize(rope_freqs.data, rope_freqs.tensor_type).astype(np.float64)
    table = table.reshape(-1)
    factor = float(table.max())
    low, high, original = 1.0, 4.0, 8192
    expected = _llama3_rope_factors(theta, head_dim, factor, low, high, original)
    if expected.shape != table.shape or not np.allclose(expected, table, rtol=1e-4, atol=1e-6):
        raise UnsupportedModelError(
            "rope_freqs.weight does not match Llama 3 RoPE scaling with low_freq_factor=1, "
            "high_freq_factor=4, original context 8192; use the safetensors checkpoint"
        )
    return {
        "rope_type": "llama3",
        "factor": factor,
        "low_freq_factor": low,
        "high_freq_factor": high,
        "original_max_position_embeddings": original,
    }


def _f32(x) -> float:
    """A float32 metadata value as the short decimal it was written from (1e-05, not
    9.999999747378752e-06), so configs round-trip to what the original config.json said."""
    return float(str(np.float32(x)))


def gguf_hf_config(path: str | os.PathLike) -> dict:
    """A transformers `config.json` dict for the model in the GGUF file `path`."""
    r = _open(path)
    arch = _architecture(r, path)

    def key(name, default=_MISSING):
        return _meta(r, f"{arch}.{name}", default)

    hidden = int(key("embedding_length"))
    n_head, n_kv = _head_counts(r, arch)
    head_dim = int(key("attention.key_length", hidden // n_head))
    tensor_names = {t.name for t in r.tensors}
    vocab = key("vocab_size", None)
    if vocab is None:  # older files: the vocabulary, else the embedding rows
        tokens = r.fields.get("tokenizer.ggml.tokens")
        embed = next((t for t in r.tensors if t.name == "token_embd.weight"), None)
        if tokens is None and embed is None:
            raise WeightsError(f"{Path(path).name}: no vocab_size, tokens or token_embd.weight")
        vocab = len(tokens.data) if tokens is not None else int(embed.shape[1])
    theta = _f32(key("rope.freq_base", 10000.0))
    model_type, hf_class = _HF_ARCH[arch]
    cfg = {
        "architectures": [hf_class],
        "model_type": model_type,
        "vocab_size": int(vocab),
        "hidden_size": hidden,
        "intermediate_size": int(key("feed_forward_length")),
        "num_hidden_layers": int(key("block_count")),
        "num_attention_heads": n_head,
        "num_key_value_heads": n_kv,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": _f32(key("attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": theta,
        "rope_scaling": _rope_scaling(r, arch, head_dim, theta),
        "max_position_embeddings": int(key("context_length", 2048)),
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "bos_token_id": _meta(r, "tokenizer.ggml.bos_token_id", None),
        "eos_token_id": _meta(r, "tokenizer.ggml.eos_token_id", None),
        "pad_token_id": _meta(r, "tokenizer.ggml.padding_token_id", None),
        "torch_dtype": "float32",
    }
    if model_type == "llama":
        cfg["attention_bias"] = "blk.0.attn_q.bias" in tensor_names
        cfg["mlp_bias"] = False
    window = key("attention.sliding_window", None)
    if arch == "gemma3":
        # What llama.cpp assumes and does not store: every sixth layer global, local RoPE base
        # 1e4, q scaled by 1/sqrt(head_dim) except in the 27B (62 layers): 1/sqrt(hidden/heads).
        cfg.update(hidden_activation="gelu_pytorch_tanh", hidden_act="gelu_pytorch_tanh",
                   sliding_window=int(window or 4096), rope_local_base_freq=10000.0,
                   query_pre_attn_scalar=hidden // n_head if cfg["num_hidden_layers"] == 62 else head_dim,
                   final_logit_softcapping=key("final_logit_softcapping", None))
    if arch == "phi3":
        cfg["sliding_window"] = int(window) if window else None
        cfg["rope_scaling"] = _phi3_longrope(r, arch)
        if cfg["rope_scaling"]:
            cfg["original_max_position_embeddings"] = cfg["rope_scaling"]["original_max_position_embeddings"]
        dims = key("rope.dimension_count", head_dim)
        if dims != head_dim:
            cfg["partial_rotary_factor"] = dims / head_dim  # refused with a clear error by ModelConfig
    return cfg


def _phi3_longrope(reader, arch: str) -> dict | None:
    """Phi-3's longrope parameters: the long/short factors llama.cpp stores as tensors, the
    original context and attention factor as metadata."""
    factors = {t.name: t for t in reader.tensors if t.name.startswith("rope_factors_")}
    if not factors:
        return None

    def table(name):
        t = factors[f"rope_factors_{name}.weight"]
        return [_f32(x) for x in gguf.quants.dequantize(t.data, t.tensor_type).reshape(-1)]
    out = {"rope_type": "longrope", "long_factor": table("long"), "short_factor": table("short"),
           "original_max_position_embeddings": int(_meta(reader, f"{arch}.rope.scaling.original_context_length"))}
    attn = _meta(reader, f"{arch}.rope.scaling.attn_factor", None)
    if attn is not None:
        out["attention_factor"] = _f32(attn)
    return out
