"""`LoraSection`: the ``lora:`` section of a train phase (rank 0 = off, every weight trains)."""

from __future__ import annotations

import dataclasses
import math

from jaxevo.errors import ConfigError

# Short name -> (params path of the stacked weight, PEFT / transformers module name).
TARGETS: dict[str, tuple[tuple[str, ...], str]] = {
    "q": (("layers", "attn", "q_proj"), "self_attn.q_proj"),
    "k": (("layers", "attn", "k_proj"), "self_attn.k_proj"),
    "v": (("layers", "attn", "v_proj"), "self_attn.v_proj"),
    "o": (("layers", "attn", "o_proj"), "self_attn.o_proj"),
    "gate": (("layers", "mlp", "gate_proj"), "mlp.gate_proj"),
    "up": (("layers", "mlp", "up_proj"), "mlp.up_proj"),
    "down": (("layers", "mlp", "down_proj"), "mlp.down_proj"),
}
INITS = ("default", "gaussian")  # A's draw (PEFT's names); B is always zero
QUANTIZE = (None, "int8", "nf4")  # the frozen base's storage (QLoRA): `jaxevo.lora.quantize`


@dataclasses.dataclass(frozen=True)
class LoraSection:
    rank: int = 0  # adapter rank r; 0 = off (full fine-tuning)
    alpha: float = 16.0  # scale = alpha / r (alpha / sqrt(r) with rslora)
    targets: tuple[str, ...] = ("q", "k", "v", "o", "gate", "up", "down")  # also q_proj, ...
    dropout: float = 0.0  # inverted dropout on each adapter's input (PEFT's lora_dropout)
    rslora: bool = False  # rank-stabilised scaling alpha / sqrt(r)
    init: str = "default"  # A: "default" kaiming-uniform (PEFT's) or "gaussian" N(0, 1/r); B = 0
    quantize_base: str | None = None  # int8 / nf4: the frozen base stored quantised (QLoRA)
    init_from: str | None = None  # a PEFT adapter directory to start from (rank/targets must match)

    def __post_init__(self):
        if self.rank < 0:
            raise ConfigError(f"lora.rank={self.rank} must be >= 0 (0 turns LoRA off)")
        if not self.enabled:
            return
        names = [self.short(t) for t in self.targets]  # raises on an unknown name
        if not names:
            raise ConfigError("lora.targets is empty: name at least one of " + ", ".join(TARGETS))
        if len(set(names)) != len(names):
            raise ConfigError(f"lora.targets={list(self.targets)} names a projection twice")
        if not self.alpha > 0:
            raise ConfigError(f"lora.alpha={self.alpha} must be > 0")
        if self.init not in INITS:
            raise ConfigError(f"lora.init={self.init!r}: choose one of {', '.join(INITS)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora.dropout={self.dropout} must be in [0, 1) (the probability "
                              "of dropping an adapter input)")
        if self.quantize_base not in QUANTIZE:
            raise ConfigError(f"lora.quantize_base={self.quantize_base!r}: choose int8, nf4 or "
                              "null (a full-precision base)")

    @property
    def enabled(self) -> bool:
        return self.rank > 0

    @property
    def scale(self) -> float:
        """The factor on A @ B: alpha / r, or alpha / sqrt(r) with rsLoRA (PEFT's convention)."""
        return self.alpha / (math.sqrt(self.rank) if self.rslora else self.rank)

    @staticmethod
    def short(name: str) -> str:
        """``q`` / ``q_proj`` / ``self_attn.q_proj`` -> ``q``; else a ConfigError listing them."""
        base = name.rsplit(".", 1)[-1]
        base = base[: -len("_proj")] if base.endswith("_proj") else base
        if base not in TARGETS:
            raise ConfigError(f"lora.targets: unknown projection {name!r}; choose from "
                              f"{', '.join(TARGETS)}")
        return base

    @property
    def target_names(self) -> tuple[str, ...]:
        """Short names in TARGETS order (stable tree and export order)."""
        chosen = {self.short(t) for t in self.targets}
        return tuple(t for t in TARGETS if t in chosen)
