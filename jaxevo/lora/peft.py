"""Adapters in PEFT's format: ``adapter_config.json`` + ``adapter_model.safetensors``.

PEFT names one adapter pair per layer and module, in torch's ``[out, in]`` layout:

    base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight  [r, E]      <- lora_a[i] [E, r]
    base_model.model.model.layers.{i}.self_attn.q_proj.lora_B.weight  [H*D, r]    <- lora_b[i] [r, H, D]

(flattened head axes in the order of `jaxevo.weights.convert`), so ``peft.PeftModel.from_pretrained``
loads them onto the transformers base, and `read_peft` takes a PEFT adapter as a starting point.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np

from jaxevo.errors import ConfigError, WeightsError
from jaxevo.lora.adapters import adapter_specs
from jaxevo.lora.config import TARGETS, LoraSection
from jaxevo.models.config import ModelConfig
from jaxevo.weights.convert import _to_host
from jaxevo.weights.safetensors_io import SafetensorsFile, write_safetensors

CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
PREFIX = "base_model.model.model.layers.{i}."


def peft_names(target: str, layer: int) -> tuple[str, str]:
    mod = PREFIX.format(i=layer) + TARGETS[target][1]
    return f"{mod}.lora_A.weight", f"{mod}.lora_B.weight"


def write_peft(adapters: dict, lcfg: LoraSection, cfg: ModelConfig, out_dir: str | Path,
               base_model: str | None = None) -> Path:
    """Write ``adapters`` (``{target: {lora_a, lora_b}}``, device or host arrays) as a PEFT
    LoRA adapter directory; returns it. Multi-process: every process calls (gathers)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = []
    for t in lcfg.target_names:
        a = np.asarray(_to_host(adapters[t]["lora_a"]), np.float32)
        b = np.asarray(_to_host(adapters[t]["lora_b"]), np.float32)
        for i in range(cfg.num_layers):
            na, nb = peft_names(t, i)
            tensors.append((na, a[i].reshape(-1, lcfg.rank).T))
            tensors.append((nb, b[i].reshape(lcfg.rank, -1).T))
    write_safetensors(out / WEIGHTS, tensors)
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
        "r": lcfg.rank, "lora_alpha": lcfg.alpha, "lora_dropout": lcfg.dropout,
        "use_rslora": lcfg.rslora, "bias": "none", "fan_in_fan_out": False,
        "target_modules": [TARGETS[t][1].split(".")[-1] for t in lcfg.target_names],
        "init_lora_weights": True, "modules_to_save": None, "inference_mode": True,
    }
    (out / CONFIG).write_text(json.dumps(config, indent=2))
    return out


# Settings of a PEFT adapter that change its arithmetic beyond W + scale * B A: refused on import.
_UNSUPPORTED = {"use_dora": False, "fan_in_fan_out": False, "layers_to_transform": None,
                "modules_to_save": None, "rank_pattern": {}, "alpha_pattern": {}, "bias": "none"}


def read_peft(directory: str | Path, cfg: ModelConfig) -> tuple[LoraSection, dict[str, dict[str, np.ndarray]]]:
    """(its `LoraSection`, adapters ``{target: {lora_a [L, *in, r], lora_b [L, r, *out]}}``
    float32 numpy) of a PEFT LoRA directory for a model of ``cfg``; a `WeightsError` names what
    does not fit (unsupported options, missing tensors, shapes)."""
    d = Path(directory)
    if not (d / CONFIG).is_file() or not (d / WEIGHTS).is_file():
        raise WeightsError(f"{d}: not a PEFT adapter directory (needs {CONFIG} and {WEIGHTS})")
    conf = json.loads((d / CONFIG).read_text())
    if conf.get("peft_type", "LORA") != "LORA":
        raise WeightsError(f"{d / CONFIG}: peft_type={conf.get('peft_type')!r}, only LORA is supported")
    for key, ok in _UNSUPPORTED.items():
        v = conf.get(key)
        if v is not None and v != ok and (v or ok):  # empty lists / dicts mean "none" too
            raise WeightsError(f"{d / CONFIG}: {key}={conf[key]!r} is not supported (need {ok!r})")
    mods = conf.get("target_modules") or []
    if isinstance(mods, str):
        raise WeightsError(f"{d / CONFIG}: target_modules={mods!r} is a regex; list the modules")
    lcfg = LoraSection(rank=int(conf["r"]), alpha=float(conf["lora_alpha"]), targets=tuple(mods),
                       rslora=bool(conf.get("use_rslora", False)))
    f = SafetensorsFile(d / WEIGHTS)
    keys = set(f.keys())
    out = {}
    for t, ab in adapter_specs(lcfg, cfg).items():
        a_shape, b_shape = ab["lora_a"][0], ab["lora_b"][0]
        a = np.empty(a_shape, np.float32)
        b = np.empty(b_shape, np.float32)
        for i in range(cfg.num_layers):
            na, nb = peft_names(t, i)
            for n, want in ((na, (lcfg.rank, int(np.prod(a_shape[1:-1])))),
                            (nb, (int(np.prod(b_shape[2:])), lcfg.rank))):
                if n not in keys:
                    raise WeightsError(f"{d / WEIGHTS}: tensor {n} is missing")
                if tuple(f.shape(n)) != want:
                    raise WeightsError(f"{d / WEIGHTS}: {n} is {tuple(f.shape(n))}, the model "
                                       f"needs {want}")
            a[i] = np.asarray(f.get(na), np.float32).T.reshape(a_shape[1:])
            b[i] = np.asarray(f.get(nb), np.float32).T.reshape(b_shape[1:])
        out[t] = {"lora_a": a, "lora_b": b}
    return lcfg, out


def load_start(lcfg: LoraSection, cfg: ModelConfig, shardings) -> dict:
    """The adapters of ``lcfg.init_from`` (a PEFT directory) laid out in ``shardings``; a
    `ConfigError` when its rank, alpha, scaling or targets differ from ``lcfg``."""
    got, adapters = read_peft(lcfg.init_from, cfg)
    mine = (lcfg.rank, float(lcfg.alpha), lcfg.rslora, lcfg.target_names)
    theirs = (got.rank, got.alpha, got.rslora, got.target_names)
    if mine != theirs:
        raise ConfigError(
            f"lora.init_from={lcfg.init_from}: the adapter has rank={got.rank}, alpha={got.alpha}, "
            f"rslora={got.rslora}, targets={list(got.target_names)}; this phase has "
            f"rank={lcfg.rank}, alpha={lcfg.alpha}, rslora={lcfg.rslora}, "
            f"targets={list(lcfg.target_names)}: set the lora keys to the adapter's")
    return jax.tree.map(lambda a, sh: jax.device_put(a, sh), adapters, shardings)  # f32
