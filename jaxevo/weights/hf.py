"""Hugging Face model directories: read (single or sharded safetensors) and write (export).

Both directions are torch-free. Export writes config.json, sharded safetensors with an index when
large, generation_config.json and the tokenizer, so `transformers` loads it directly.
"""

from __future__ import annotations

import json
from pathlib import Path

import ml_dtypes
import numpy as np

from jaxevo.errors import WeightsError
from jaxevo.models.config import ModelConfig
from jaxevo.weights.convert import params_to_hf
from jaxevo.weights.safetensors_io import SafetensorsFile, write_safetensors

INDEX = "model.safetensors.index.json"


class HFDirSource:
    """TensorSource over a HF directory: `model.safetensors` or shards + `model.safetensors.index.json`."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        if not (self.dir / "config.json").exists():
            raise WeightsError(f"{self.dir}: no config.json — is this a Hugging Face model directory?")
        if (self.dir / INDEX).exists():
            weight_map = json.loads((self.dir / INDEX).read_text())["weight_map"]
            files = {f: SafetensorsFile(self.dir / f) for f in sorted(set(weight_map.values()))}
            self._where = {n: files[f] for n, f in weight_map.items()}
        else:
            shards = sorted(self.dir.glob("*.safetensors"))
            if not shards:
                bins = list(self.dir.glob("*.bin")) + list(self.dir.glob("*.pt"))
                hint = " (only PyTorch .bin files: re-save with safe_serialization=True)" if bins else ""
                raise WeightsError(f"{self.dir}: no .safetensors weights found{hint}")
            self._where = {}
            for sh in shards:
                f = SafetensorsFile(sh)
                self._where.update({n: f for n in f.keys()})

    def keys(self):
        return self._where.keys()

    def shape(self, name):
        return self._where[name].shape(name)

    def get(self, name):
        return self._where[name].get(name)


def export_dtype(name: str):
    """The numpy dtype of an export dtype name (float32 / bfloat16 / float16)."""
    return {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}[name]


def export_hf(params, cfg: ModelConfig, out_dir: str | Path, tokenizer=None,
              dtype: str = "float32", max_shard_bytes: int = 2 * 2**30) -> Path:
    """Write a transformers-loadable directory. Tensors stream one at a time into shards."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    np_dtype = export_dtype(dtype)
    shard, size, shards, total = [], 0, [], 0

    def flush():
        name = f"model-{len(shards) + 1:05d}.safetensors"
        write_safetensors(out / name, shard)
        shards.append((name, [n for n, _ in shard]))

    for name, arr in params_to_hf(params, cfg, np_dtype):
        if shard and size + arr.nbytes > max_shard_bytes:
            flush()
            shard, size = [], 0
        shard.append((name, arr))
        size += arr.nbytes
        total += arr.nbytes
    flush()
    if len(shards) == 1:
        (out / shards[0][0]).replace(out / "model.safetensors")
    else:
        index = {"metadata": {"total_size": total},
                 "weight_map": {n: f for f, names in shards for n in names}}
        (out / INDEX).write_text(json.dumps(index, indent=2))
    (out / "config.json").write_text(json.dumps(cfg.to_hf(dtype), indent=2))
    eos = list(cfg.eos_token_id) if isinstance(cfg.eos_token_id, tuple) else cfg.eos_token_id
    gen = {"bos_token_id": cfg.bos_token_id, "eos_token_id": eos}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2))
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out
