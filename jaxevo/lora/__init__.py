"""Low-rank adapters (LoRA) as a pure transformation of the parameter tree.

    lcfg = LoraSection(rank=16, alpha=32, targets=("q", "v"))
    adapters = init_adapters(lcfg, model_cfg, rng)          # the only trainable tree
    params = merge(base_params, adapters, lcfg)             # base + scale * A @ B, per target

The trainer hands the adapters to the model as a second variable collection and each adapted
projection computes ``x·W + scale·dropout(x)·A·B`` in its layer (`jaxevo.models.lowrank`), so
every objective (SFT, preference, EVOLVE, SELF's views) trains adapters unchanged; `merge` makes
the exported (and sampled) model. `quantize.py` stores the frozen base int8 / NF4 (QLoRA);
`peft.py` writes and reads the adapters in PEFT's format.
"""

from jaxevo.lora.adapters import adapter_shardings, init_adapters, merge, num_adapter_params
from jaxevo.lora.config import TARGETS, LoraSection

__all__ = ["LoraSection", "TARGETS", "adapter_shardings", "init_adapters", "merge",
           "num_adapter_params"]
