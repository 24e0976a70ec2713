"""llama.cpp GGUF checkpoints, read without torch.

A `.gguf` file carries three things jaxevo needs, each exposed here in Hugging Face form so the
rest of the code never sees llama.cpp conventions:

* the tensors -> `GGUFSource`, a `TensorSource` under transformers Llama state-dict names, each
  tensor dequantized to float32 only when asked for (torch layout [out, in]);
* the hyper-parameters -> `gguf_hf_config(path)`, a transformers `config.json` dict;
* the tokenizer -> `gguf_tokenizer(path)`, a `PreTrainedTokenizerFast` built with `tokenizers`.

Supported: `general.architecture` "llama" (Llama 1/2/3, SmolLM, TinyLlama, Mistral -- whose GGUFs
say "llama") and "qwen2", with a byte-level BPE ("gpt2") vocabulary.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, decoders, pre_tokenizers, processors
from tokenizers.models import BPE
from transformers import PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import bytes_to_unicode

from jaxevo.errors import UnsupportedModelError, WeightsError

SUPPORTED_ARCHS = ("llama", "qwen2")
_HF_ARCH = {"llama": ("llama", "LlamaForCausalLM"), "qwen2": ("qwen2", "Qwen2ForCausalLM")}

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
}
_BLOCK_RE = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")
# Tensors with no transformers counterpart: Llama 3.1+ RoPE factors (`gguf_hf_config` turns them
# back into `rope_scaling`) and the precomputed rotary tables some old converters wrote.
_IGNORED_RE = re.compile(r"rope_freqs\.weight|blk\.\d+\.attn_rot_embd(\.weight)?")


def _hf_name(gguf_name: str) -> str | None:
    if gguf_name in _TOP_LEVEL:
        return _TOP_LEVEL[gguf_name]
    m = _BLOCK_RE.fullmatch(gguf_name)
    if m and m.group(2) in _BLOCK:
        return f"model.layers.{m.group(1)}.{_BLOCK[m.group(2)]}.{m.group(3)}"
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
        # llama.cpp permutes Q/K only for its "llama" architecture; Qwen2 keeps the HF order.
        self._permuted = self.arch == "llama"
        self._tensors = {}
        unknown = []
        for t in self._reader.tensors:
            name = _hf_name(t.name)
            if name is not None:
                self._tensors[name] = t
            elif not _IGNORED_RE.fullmatch(t.name):
                unknown.append(t.name)
        if unknown:
            raise UnsupportedModelError(
                f"{self.path.name}: tensors with no Llama/Qwen2 counterpart: {unknown[:8]}"
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
    return cfg


# ---------------------------------------------------------------------------------- tokenizer

# llama.cpp's `tokenizer.ggml.pre` names the pre-tokenizer its converter detected. Byte-level
# vocabularies differ only in how text is split before BPE.
# GPT-2's split, then digits one by one: SmolLM, StarCoder and friends (llama.cpp applies "\p{N}"
# first, exactly `pre_tokenizers.Digits(individual_digits=True)`).
_DIGITS_THEN_GPT2 = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"}
_GPT2 = {"default", "gpt2", "gpt-2", "mpt", "olmo", "jais"}
_SPLITS = {
    # Llama 3 (tiktoken-style): digits in groups of up to three.
    **dict.fromkeys(
        ("llama3", "llama-v3", "llama-bpe", "smaug-bpe", "dbrx", "falcon3"),
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
        r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    ),
    # Qwen2: single digits.
    **dict.fromkeys(
        ("qwen2", "deepseek-r1-qwen"),
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
        r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    ),
}
_CONTROL, _USER_DEFINED = 3, 4  # llama.cpp token types


def _byte_level_pre_tokenizer(pre: str | None):
    if pre in _DIGITS_THEN_GPT2:
        return pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ])
    if pre in _SPLITS:
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(_SPLITS[pre]), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    if pre not in _GPT2 and pre is not None:
        warnings.warn(
            f"GGUF tokenizer.ggml.pre={pre!r} is unknown to jaxevo; splitting text like GPT-2. "
            "Token ids may differ from the original tokenizer around digits and whitespace.",
            stacklevel=3,
        )
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def _register_extra_specials(tok, tokens) -> None:
    """List `tokens` among the tokenizer's special tokens (the kwarg changed name in v5)."""
    params = inspect.signature(tok.add_special_tokens).parameters
    if "replace_extra_special_tokens" in params:  # transformers >= 5
        tok.add_special_tokens({"extra_special_tokens": tokens}, replace_extra_special_tokens=False)
    else:
        tok.add_special_tokens(
            {"additional_special_tokens": tokens}, replace_additional_special_tokens=False)


def gguf_tokenizer(path: str | os.PathLike):
    """A `transformers.PreTrainedTokenizerFast` for the GGUF file `path`, built without torch.

    Byte-level BPE from `tokenizer.ggml.tokens`/`merges`, split the way `tokenizer.ggml.pre` says,
    control tokens (`<|im_start|>`...) added as special tokens so they encode to single ids,
    user-defined tokens added as plain added tokens, BOS/EOS added only if the file's
    `add_bos_token`/`add_eos_token` flags say so, and the file's chat template.

    Differs on purpose from transformers' own GGUF tokenizer for `pre` = "smollm" (SmolLM2):
    transformers ignores `pre` there and splits with GPT-2's regex alone, while llama.cpp and the
    upstream tokenizer.json split numeric characters one by one first; we follow upstream, which
    changes the ids of whitespace runs before digits ("x  42") and of " ½"-like text.
    SentencePiece GGUFs (`tokenizer.ggml.model` = "llama": Llama 2, Mistral, TinyLlama) are not
    supported here; load those tokenizers from a Hugging Face directory.
    """
    r = _open(path)
    arch = _meta(r, "general.architecture", "")
    model = _meta(r, "tokenizer.ggml.model", None)
    if model != "gpt2":
        raise UnsupportedModelError(
            f"{Path(path).name}: GGUF tokenizer model {model!r} is not supported (jaxevo builds "
            "byte-level BPE, 'gpt2'); load the tokenizer from a Hugging Face directory with "
            "tokenizer.json instead"
        )
    tokens = _meta(r, "tokenizer.ggml.tokens")
    types = _meta(r, "tokenizer.ggml.token_type", None) or [1] * len(tokens)
    merges = [tuple(m.split(" ", 1)) for m in _meta(r, "tokenizer.ggml.merges", [])]

    # Every regular token of a byte-level vocabulary is spelled in GPT-2's byte alphabet; a few
    # converters wrote some as raw UTF-8. Respell those so the BPE model can find them.
    spelling = bytes_to_unicode()
    alphabet = set(spelling.values())
    vocab = {
        t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8")): i
        for i, t in enumerate(tokens)
    }
    backend = Tokenizer(BPE(vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="",
                            end_of_word_suffix="", fuse_unk=False))
    backend.pre_tokenizer = _byte_level_pre_tokenizer(_meta(r, "tokenizer.ggml.pre", None))
    backend.decoder = decoders.ByteLevel()

    # A control token outside the byte alphabet is a llama.cpp mislabel (transformers skips those
    # too): adding it would grow the vocabulary past the embedding size.
    control = [AddedToken(t, special=True, normalized=False)
               for t, ty in zip(tokens, types) if ty == _CONTROL and set(t) <= alphabet]
    user = [AddedToken(t, special=False, normalized=False)
            for t, ty in zip(tokens, types) if ty == _USER_DEFINED and t in vocab]
    backend.add_special_tokens(control)
    backend.add_tokens(user)

    def special(key):
        i = _meta(r, f"tokenizer.ggml.{key}", None)
        return tokens[i] if i is not None and 0 <= i < len(tokens) else None

    bos, eos = special("bos_token_id"), special("eos_token_id")
    add_bos = bool(_meta(r, "tokenizer.ggml.add_bos_token", False)) and bos is not None
    add_eos = bool(_meta(r, "tokenizer.ggml.add_eos_token", False)) and eos is not None
    single = ([f"{bos}:0"] if add_bos else []) + ["$A:0"] + ([f"{eos}:0"] if add_eos else [])
    pair = single + ([f"{bos}:1"] if add_bos else []) + ["$B:1"] + ([f"{eos}:1"] if add_eos else [])
    backend.post_processor = processors.TemplateProcessing(
        single=single, pair=pair,
        special_tokens=[(t, vocab[t]) for t in dict.fromkeys((bos, eos)) if t in vocab],
    )

    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos,
        eos_token=eos,
        unk_token=special("unknown_token_id"),
        pad_token=special("padding_token_id"),
        add_bos_token=add_bos,
        add_eos_token=add_eos,
        chat_template=_meta(r, "tokenizer.chat_template", None),
        clean_up_tokenization_spaces=False,  # byte-level BPE decodes exactly; never "fix" spaces
        model_max_length=int(_meta(r, f"{arch}.context_length", 1 << 30)),
    )
    named = {bos, eos, special("unknown_token_id"), special("padding_token_id")}
    extra = [t for t in control if t.content not in named]
    if extra:
        _register_extra_specials(tok, extra)
    return tok
