"""Model configuration: one frozen dataclass for every supported decoder family.

Built from a Hugging Face `config.json` (`ModelConfig.from_hf`) and written back for export
(`to_hf`). A family is a set of feature switches here (q/k norm, sandwich norms, soft-capping,
local/global layers...); the arithmetic behind each switch lives once in `layers.py`. Runtime
choices (compute dtype, remat) live here too because they change the traced program, not the
weights.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from jaxevo.errors import UnsupportedModelError

# HF model_type -> the HF architecture class name written on export.
SUPPORTED = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "gemma3_text": "Gemma3ForCausalLM",
    "phi3": "Phi3ForCausalLM",
}
FAMILY_NAMES = ("Llama 2/3/3.1/3.2, SmolLM, TinyLlama, Mistral, Qwen2/2.5, Qwen3, Gemma 3 (text), "
                "Phi-3/3.5")
ROPE_TYPES = ("default", "linear", "llama3", "longrope")
ACTIVATIONS = ("silu", "gelu_pytorch_tanh")
LAYER_TYPES = ("full_attention", "sliding_attention")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")


def _hashable(v):
    return tuple(v) if isinstance(v, list) else v


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
    # Keys older than this are masked, in every layer (Mistral v0.1, Phi-3) or in the layers
    # `layer_types` marks "sliding_attention" (Gemma 3, Qwen3 with use_sliding_window).
    sliding_window: int | None = None
    layer_types: tuple[str, ...] | None = None
    rope_local_theta: float | None = None  # RoPE base of the sliding layers (Gemma 3), no scaling
    qk_norm: bool = False  # RMSNorm over head_dim on q and k before RoPE (Qwen3, Gemma 3)
    # Gemma: norms scale by (1 + w) in f32 (stored w as in the checkpoint), extra norms after
    # attention and MLP, embeddings times sqrt(hidden), GeGLU, attention scale from
    # query_pre_attn_scalar, logit soft-capping.
    norm_unit_offset: bool = False
    sandwich_norms: bool = False
    scale_embeddings: bool = False
    hidden_act: str = "silu"
    query_pre_attn_scalar: float | None = None
    attn_logit_softcap: float | None = None
    final_logit_softcap: float | None = None
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
        if self.hidden_act not in ACTIVATIONS:
            raise UnsupportedModelError(
                f"hidden_act={self.hidden_act!r} is not supported; jaxevo supports {ACTIVATIONS}")
        if self.layer_types is not None:
            bad = sorted(set(self.layer_types) - set(LAYER_TYPES))
            if bad or len(self.layer_types) != self.num_layers:
                raise UnsupportedModelError(
                    f"layer_types must list one of {LAYER_TYPES} per layer ({self.num_layers}); "
                    f"got {len(self.layer_types)} entries{f', unknown {bad}' if bad else ''}")

    @property
    def rope_scaling_dict(self) -> dict[str, Any] | None:
        return dict(self.rope_scaling) if self.rope_scaling else None

    @property
    def sliding_layers(self) -> tuple[bool, ...]:
        """Per layer: does it attend only to the last `sliding_window` keys?"""
        if not self.sliding_window:
            return (False,) * self.num_layers
        if self.layer_types is None:
            return (True,) * self.num_layers
        return tuple(t == "sliding_attention" for t in self.layer_types)

    @property
    def attn_scale(self) -> float:
        """The factor on q·k: query_pre_attn_scalar**-0.5 (Gemma) or head_dim**-0.5."""
        return (self.query_pre_attn_scalar or self.head_dim) ** -0.5

    def replace(self, **kw) -> "ModelConfig":
        return dataclasses.replace(self, **kw)

    def num_params(self) -> int:
        """Parameter count (embedding counted once when tied)."""
        e, f, v = self.hidden_size, self.intermediate_size, self.vocab_size
        q = self.num_heads * self.head_dim
        kv = self.num_kv_heads * self.head_dim
        attn = e * q * 2 + e * kv * 2 + (q + 2 * kv if self.qkv_bias else 0)
        attn += 2 * self.head_dim if self.qk_norm else 0
        layer = attn + 3 * e * f + (4 if self.sandwich_norms else 2) * e
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
                f"({FAMILY_NAMES})"
            )
        heads = hf["num_attention_heads"]
        head_dim = hf.get("head_dim") or hf["hidden_size"] // heads
        eos = hf.get("eos_token_id")
        gemma = model_type == "gemma3_text"
        theta, rope, local_theta = _rope(hf, model_type)
        partial = hf.get("partial_rotary_factor") or (hf.get("rope_parameters") or {}).get(
            "partial_rotary_factor") or 1.0
        if partial != 1.0:
            raise UnsupportedModelError(
                f"partial_rotary_factor={partial} is not supported (RoPE on every head dimension only)")
        return cls(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=hf.get("num_key_value_heads") or heads,
            head_dim=head_dim,
            rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
            rope_theta=theta,
            rope_scaling=rope,
            max_position_embeddings=hf.get("max_position_embeddings", 2048),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", gemma)),
            qkv_bias=model_type == "qwen2" or bool(hf.get("attention_bias", False)),
            sliding_window=_window(hf, model_type),
            layer_types=_layer_types(hf, model_type),
            rope_local_theta=local_theta,
            qk_norm=model_type in ("qwen3", "gemma3_text"),
            norm_unit_offset=gemma,
            sandwich_norms=gemma,
            scale_embeddings=gemma,
            hidden_act=hf.get("hidden_activation") or hf.get("hidden_act") or "silu",
            query_pre_attn_scalar=hf.get("query_pre_attn_scalar", 256) if gemma else None,
            # transformers' Gemma 3 reads attn_logit_softcapping but never applies it (Gemma 2
            # does); we follow the reference implementation we are tested against.
            attn_logit_softcap=None,
            final_logit_softcap=hf.get("final_logit_softcapping") if gemma else None,
            model_type=model_type,
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
            pad_token_id=hf.get("pad_token_id"),
            **runtime,
        )

    def to_hf(self, torch_dtype: str = "float32") -> dict[str, Any]:
        """A transformers `config.json` dict for this model."""
        rope = self.rope_scaling_dict
        if rope:
            rope = {k: list(v) if isinstance(v, tuple) else v for k, v in rope.items()}
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
            "rope_scaling": rope,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "hidden_act": self.hidden_act,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": list(self.eos_token_id) if isinstance(self.eos_token_id, tuple)
            else self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "torch_dtype": torch_dtype,
        }
        if self.model_type in ("llama", "qwen3"):
            hf["attention_bias"] = self.qkv_bias
        if self.model_type == "llama":
            hf["mlp_bias"] = False
        if self.model_type in ("mistral", "phi3"):
            hf["sliding_window"] = self.sliding_window
        if self.model_type == "phi3" and rope and "original_max_position_embeddings" in rope:
            hf["original_max_position_embeddings"] = rope["original_max_position_embeddings"]
        if self.model_type in ("qwen3", "gemma3_text"):
            hf["sliding_window"] = self.sliding_window
            hf["layer_types"] = list(self.layer_types or ["full_attention"] * self.num_layers)
        if self.model_type == "qwen3":
            hf["use_sliding_window"] = any(self.sliding_layers)
            hf["max_window_layers"] = self.num_layers
        if self.model_type == "gemma3_text":
            hf["hidden_activation"] = self.hidden_act
            hf["rope_local_base_freq"] = self.rope_local_theta
            hf["query_pre_attn_scalar"] = self.query_pre_attn_scalar
            hf["final_logit_softcapping"] = self.final_logit_softcap
            hf["attn_logit_softcapping"] = None
        return hf


def _rope(hf: dict, model_type: str) -> tuple[float, tuple | None, float | None]:
    """(rope_theta, rope_scaling as sorted pairs or None, the sliding layers' theta or None) from
    either config format: transformers < 5 (`rope_theta`, `rope_scaling`, Gemma's
    `rope_local_base_freq`) or >= 5 (`rope_parameters`, nested per layer type for Gemma 3)."""
    params = hf.get("rope_parameters") or {}
    local_theta = None
    if "full_attention" in params or "sliding_attention" in params:
        local = params.get("sliding_attention") or {}
        if local.get("rope_type", "default") != "default":
            raise UnsupportedModelError(
                f"RoPE scaling on the sliding layers ({local.get('rope_type')}) is not supported")
        local_theta = local.get("rope_theta")
        params = params.get("full_attention") or {}
    rope = hf.get("rope_scaling") or params
    theta = hf.get("rope_theta") or params.get("rope_theta") or rope.get("rope_theta") or 10000.0
    if model_type == "gemma3_text":
        local_theta = float(local_theta or hf.get("rope_local_base_freq") or 10000.0)
        theta = hf.get("rope_theta") or params.get("rope_theta") or 1_000_000.0
    if not rope:
        return float(theta), None, local_theta
    rope = dict(rope)
    rtype = rope.pop("rope_type", rope.pop("type", "default"))
    rtype = "longrope" if rtype == "su" else rtype  # Phi-3's first name for it
    if rtype not in ROPE_TYPES:
        raise UnsupportedModelError(
            f"rope_scaling type {rtype!r} is not supported; jaxevo supports {ROPE_TYPES}")
    if rtype == "default":
        return float(theta), None, local_theta
    rope.pop("rope_theta", None)
    rope.pop("partial_rotary_factor", None)
    rope["rope_type"] = rtype
    if rtype == "longrope":
        orig = hf.get("original_max_position_embeddings") or rope.get("original_max_position_embeddings")
        rope["original_max_position_embeddings"] = orig or hf["max_position_embeddings"]
        if rope.get("factor") is None:
            rope["factor"] = hf["max_position_embeddings"] / rope["original_max_position_embeddings"]
        if rope.get("attention_factor") is None:
            f = rope["factor"]
            rope["attention_factor"] = 1.0 if f <= 1.0 else math.sqrt(
                1 + math.log(f) / math.log(rope["original_max_position_embeddings"]))
    rope = {k: v for k, v in rope.items() if v is not None}
    return float(theta), tuple(sorted((k, _hashable(v)) for k, v in rope.items())), local_theta


def _window(hf: dict, model_type: str) -> int | None:
    if model_type in ("mistral", "phi3", "gemma3_text"):
        return hf.get("sliding_window") or (4096 if model_type == "gemma3_text" else None)
    # Qwen2/3 configs carry a sliding_window that is off unless use_sliding_window is set.
    return (hf.get("sliding_window") or None) if hf.get("use_sliding_window") else None


def _layer_types(hf: dict, model_type: str) -> tuple[str, ...] | None:
    n = hf["num_hidden_layers"]
    if hf.get("layer_types"):
        return tuple(hf["layer_types"])
    if model_type == "gemma3_text":  # transformers' default: every sixth layer is global
        pattern = hf.get("sliding_window_pattern") or hf.get("_sliding_window_pattern") or 6
        return tuple("sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(n))
    if model_type in ("qwen2", "qwen3") and hf.get("use_sliding_window"):
        first = hf.get("max_window_layers", n)  # layers from this index on slide
        return tuple("sliding_attention" if i >= first else "full_attention" for i in range(n))
    return None
