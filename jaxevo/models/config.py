"""Model configuration: one frozen dataclass for the Llama / Mistral / Qwen2 family.

Built from a Hugging Face `config.json` (`ModelConfig.from_hf`) and written back for export
(`to_hf`). Runtime choices (compute dtype, remat, scan) live here too because they change the
traced program, not the weights.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from jaxevo.errors import UnsupportedModelError

# HF model_type -> the HF architecture class name written on export.
SUPPORTED = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
}
ROPE_TYPES = ("default", "linear", "llama3")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    # ((key, value), ...) so the config stays hashable; None = plain RoPE.
    rope_scaling: tuple[tuple[str, Any], ...] | None = None
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    qkv_bias: bool = False  # Qwen2
    sliding_window: int | None = None  # Mistral v0.1: keys older than this are masked
    model_type: str = "llama"
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    pad_token_id: int | None = None
    # Runtime (not part of the weights).
    dtype: str = "float32"  # compute dtype of activations and matmul inputs
    param_dtype: str = "float32"  # master weights
    remat: str = "none"

    def __post_init__(self):
        if self.num_heads % self.num_kv_heads:
            raise UnsupportedModelError(
                f"num_attention_heads={self.num_heads} is not a multiple of "
                f"num_key_value_heads={self.num_kv_heads}"
            )
        if self.remat not in REMAT_POLICIES:
            raise UnsupportedModelError(f"remat={self.remat!r}: choose one of {REMAT_POLICIES}")

    @property
    def rope_scaling_dict(self) -> dict[str, Any] | None:
        return dict(self.rope_scaling) if self.rope_scaling else None

    def replace(self, **kw) -> "ModelConfig":
        return dataclasses.replace(self, **kw)

    def num_params(self) -> int:
        """Parameter count (embedding counted once when tied)."""
        e, f, v = self.hidden_size, self.intermediate_size, self.vocab_size
        q = self.num_heads * self.head_dim
        kv = self.num_kv_heads * self.head_dim
        attn = e * q * 2 + e * kv * 2 + (q + 2 * kv if self.qkv_bias else 0)
        layer = attn + 3 * e * f + 2 * e
        head = 0 if self.tie_word_embeddings else e * v
        return v * e + self.num_layers * layer + e + head

    # ------------------------------------------------------------------ HF interop
    @classmethod
    def from_hf(cls, hf: dict[str, Any] | str | Path, **runtime) -> "ModelConfig":
        """From a HF config dict or a path to `config.json` / its directory."""
        if not isinstance(hf, dict):
            p = Path(hf)
            p = p / "config.json" if p.is_dir() else p
            hf = json.loads(p.read_text())
        model_type = hf.get("model_type")
        if model_type not in SUPPORTED:
            raise UnsupportedModelError(
                f"model_type={model_type!r} is not supported; jaxevo runs {sorted(SUPPORTED)} "
                "(Llama 2/3/3.1/3.2, SmolLM, TinyLlama, Mistral, Qwen2/2.5)"
            )
        heads = hf["num_attention_heads"]
        rope = hf.get("rope_scaling") or hf.get("rope_parameters")
        rope_theta = hf.get("rope_theta")
        if rope is not None:
            rope = dict(rope)
            rope_theta = rope_theta or rope.get("rope_theta")
            rtype = rope.get("rope_type", rope.get("type", "default"))
            if rtype not in ROPE_TYPES:
                raise UnsupportedModelError(
                    f"rope_scaling type {rtype!r} is not supported; jaxevo supports {ROPE_TYPES}"
                )
            rope = None if rtype == "default" else tuple(
                sorted((k, v) for k, v in rope.items() if k != "rope_theta"))
        eos = hf.get("eos_token_id")
        return cls(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=hf.get("num_key_value_heads") or heads,
            head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
            rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
            rope_theta=float(rope_theta or 10000.0),
            rope_scaling=rope,
            max_position_embeddings=hf.get("max_position_embeddings", 2048),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            qkv_bias=model_type == "qwen2" or bool(hf.get("attention_bias", False)),
            # Qwen2 configs carry a sliding_window that is off unless use_sliding_window is set.
            sliding_window=(hf.get("sliding_window") or None) if model_type == "mistral" or
            hf.get("use_sliding_window") else None,
            model_type=model_type,
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
            pad_token_id=hf.get("pad_token_id"),
            **runtime,
        )

    def to_hf(self, torch_dtype: str = "float32") -> dict[str, Any]:
        """A transformers `config.json` dict for this model."""
        hf: dict[str, Any] = {
            "architectures": [SUPPORTED[self.model_type]],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling_dict,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "hidden_act": "silu",
            "bos_token_id": self.bos_token_id,
            "eos_token_id": list(self.eos_token_id) if isinstance(self.eos_token_id, tuple)
            else self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "torch_dtype": torch_dtype,
        }
        if self.model_type == "llama":
            hf["attention_bias"] = self.qkv_bias
            hf["mlp_bias"] = False
        if self.model_type == "mistral":
            hf["sliding_window"] = self.sliding_window
        return hf
