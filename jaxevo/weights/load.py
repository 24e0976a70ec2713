"""Resolve the `M` of the command-line contract to (config, params, tokenizer).

`M` is a Hugging Face model directory, a `.gguf` file, a jaxevo checkpoint directory (has
`jaxevo.json`; see `jaxevo.train.checkpoint`), or the embedded default `smollm2-135m-instruct`.
GGUF files (and so the embedded model) are converted once into a HF directory under the cache
(`$JAXEVO_CACHE`, default `~/.cache/jaxevo`) and loaded from there afterwards.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from jaxevo.errors import WeightsError
from jaxevo.models.config import ModelConfig

CHECKPOINT_MARKER = "jaxevo.json"


@dataclasses.dataclass(frozen=True)
class Pretrained:
    cfg: ModelConfig
    params: Any  # params tree (jax arrays, sharded if a mesh was given)
    tokenizer: Any  # transformers.PreTrainedTokenizerFast
    path: Path  # the HF directory the weights were read from


def cache_dir() -> Path:
    return Path(os.environ.get("JAXEVO_CACHE", Path.home() / ".cache" / "jaxevo"))


def hf_dir_for(spec: str | Path) -> Path:
    """The Hugging Face directory that holds model `spec` (converting a GGUF once if needed)."""
    from jaxevo.weights import embedded

    if embedded.is_embedded(str(spec)):
        return _gguf_to_hf(embedded.resolve_embedded(str(spec)), name=str(spec))
    p = Path(spec).expanduser()
    if not p.exists():
        raise WeightsError(
            f"model {spec!r} not found: give a Hugging Face model directory, a .gguf file, a jaxevo "
            f"checkpoint directory, or one of the embedded names {sorted(embedded.EMBEDDED)}")
    if p.is_file() and p.suffix == ".gguf":
        return _gguf_to_hf(p)
    if p.is_dir() and (p / CHECKPOINT_MARKER).exists():
        marker = json.loads((p / CHECKPOINT_MARKER).read_text())
        return hf_dir_for(p / marker.get("model_dir", "model"))
    if p.is_dir() and (p / "config.json").exists():
        return p
    raise WeightsError(f"{p}: neither a .gguf file nor a directory with config.json or {CHECKPOINT_MARKER}")


def _gguf_to_hf(gguf_path: Path, name: str | None = None) -> Path:
    """Convert a GGUF file into a cached HF directory (keyed by name+size+mtime), once."""
    from jaxevo.weights.gguf import GGUFSource, gguf_hf_config, gguf_tokenizer
    from jaxevo.weights.hf import export_hf
    from jaxevo.weights.convert import load_params

    st = gguf_path.stat()
    key = hashlib.sha1(f"{gguf_path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    out = cache_dir() / f"{name or gguf_path.stem}-{key}"
    if (out / "config.json").exists():
        return out
    cfg = ModelConfig.from_hf(gguf_hf_config(gguf_path))
    params = load_params(GGUFSource(gguf_path), cfg)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    export_hf(params, cfg, tmp, tokenizer=gguf_tokenizer(gguf_path))
    os.replace(tmp, out)  # atomic: a killed conversion never leaves a half-written cache entry
    return out


def load_pretrained(spec: str | Path, *, dtype: str = "float32", param_dtype: str = "float32",
                    remat: str = "none", mesh=None, cfg_hook: Callable[[ModelConfig], ModelConfig] | None = None
                    ) -> Pretrained:
    """Load model `spec` (see module doc). With `mesh`, params stream straight into their shardings."""
    from jaxevo.tokenizer import load_tokenizer
    from jaxevo.weights.convert import load_params
    from jaxevo.weights.hf import HFDirSource

    d = hf_dir_for(spec)
    cfg = ModelConfig.from_hf(d, dtype=dtype, param_dtype=param_dtype, remat=remat)
    if cfg_hook:
        cfg = cfg_hook(cfg)
    shardings = None
    if mesh is not None:
        from jaxevo.sharding import param_shardings

        shardings = param_shardings(cfg, mesh)
    params = load_params(HFDirSource(d), cfg, shardings)
    return Pretrained(cfg=cfg, params=params, tokenizer=load_tokenizer(d), path=d)
