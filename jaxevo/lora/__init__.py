"""Low-rank adapters (LoRA) as a pure transformation of the parameter tree.

    lcfg = LoraSection(rank=16, alpha=32, targets=("q", "v"))
    adapters = init_adapters(lcfg, model_cfg, rng)          # the only trainable tree
    params = merge(base_params, adapters, lcfg)             # base + scale * A @ B, per target

The model code never sees adapters: the trainer merges inside its jitted step, so every objective
(SFT, preference, EVOLVE, SELF's views) trains adapters unchanged. `peft.py` writes and reads the
adapters in PEFT's format.
"""

from jaxevo.lora.adapters import adapter_shardings, init_adapters, merge, num_adapter_params
from jaxevo.lora.config import TARGETS, LoraSection

__all__ = ["LoraSection", "TARGETS", "adapter_shardings", "init_adapters", "merge",
           "num_adapter_params"]
