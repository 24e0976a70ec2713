"""Resolve the `M` of the command-line contract to (config, params, tokenizer).

`M` is a Hugging Face model directory, a `.gguf` file, a jaxevo checkpoint directory (has
`jaxevo.json`; see `jaxevo.train.checkpoint`), or the embedded default `smollm2-135m-instruct`.
GGUF files (and so the embedded model) are converted once into a HF directory under the cache
(`$JAXEVO_CACHE`, default `~/.cache/jaxevo`) and loaded from there afterwards.
`load_tokenizer` reads the tokenizer from the same files.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from transformers import PreTrainedTokenizerFast

from jaxevo.errors import WeightsError
from jaxevo.models.config import ModelConfig
from jaxevo.runtime import cache_dir
from jaxevo.sharding import param_shardings
from jaxevo.weights import embedded
from jaxevo.weights.convert import load_params
from jaxevo.weights.gguf import GGUFSource, gguf_hf_config
from jaxevo.weights.gguf_tokenizer import gguf_tokenizer
from jaxevo.weights.hf import HFDirSource, export_hf

CHECKPOINT_MARKER = "jaxevo.json"


@dataclasses.dataclass(frozen=True)
class Pretrained:
    cfg: ModelConfig
    params: Any  # params tree (jax arrays, sharded if a mesh was given)
    tokenizer: Any  # transformers.PreTrainedTokenizerFast
    path: Path  # the HF directory the weights were read from


def hf_dir_for(spec: str | Path) -> Path:
    """The Hugging Face directory that holds model `spec` (converting a GGUF once if needed)."""
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


# The modules whose code decides what a GGUF converts to: a change to any of them is a new
# converter version, so a conversion made by older code is never read back.
CONVERTER_MODULES = ("jaxevo.weights.gguf", "jaxevo.weights.convert", "jaxevo.weights.hf",
                     "jaxevo.weights.safetensors_io", "jaxevo.models.config")


@functools.lru_cache(maxsize=1)
def converter_version() -> str:
    """A hash of the converter's source (`CONVERTER_MODULES`): part of every cache key."""
    h = hashlib.sha1()
    for name in CONVERTER_MODULES:
        h.update(Path(importlib.util.find_spec(name).origin).read_bytes())
    return h.hexdigest()[:12]


def gguf_cache_entry(gguf_path: Path, name: str | None = None) -> Path:
    """The cache folder of ``gguf_path``'s conversion: keyed by the file's path, size and mtime
    and by `converter_version`."""
    st = gguf_path.stat()
    key = hashlib.sha1(f"{gguf_path.resolve()}:{st.st_size}:{st.st_mtime_ns}:"
                       f"{converter_version()}".encode()).hexdigest()[:12]
    return cache_dir() / f"{name or gguf_path.stem}-{key}"


def _gguf_to_hf(gguf_path: Path, name: str | None = None) -> Path:
    """Convert a GGUF file into a cached HF directory (`gguf_cache_entry`), once."""
    out = gguf_cache_entry(gguf_path, name)
    if (out / "config.json").exists():
        return out
    cfg = ModelConfig.from_hf(gguf_hf_config(gguf_path))
    params = load_params(GGUFSource(gguf_path), cfg)
    # a folder of this process's own: two processes converting the same file at once (two runs
    # started together on a fresh machine) must not write into or delete each other's
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    export_hf(params, cfg, tmp, tokenizer=gguf_tokenizer(gguf_path))
    try:
        os.replace(tmp, out)  # atomic: a killed conversion never leaves a half-written cache entry
    except OSError:
        if not (out / "config.json").exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # another process finished the same entry first
    return out


def load_pretrained(spec: str | Path, *, dtype: str = "float32", param_dtype: str = "float32",
                    remat: str = "none", mesh=None, cfg_hook: Callable[[ModelConfig], ModelConfig] | None = None
                    ) -> Pretrained:
    """Load model `spec` (see module doc). With `mesh`, params stream straight into their shardings."""
    d = hf_dir_for(spec)
    cfg = ModelConfig.from_hf(d, dtype=dtype, param_dtype=param_dtype, remat=remat)
    if cfg_hook:
        cfg = cfg_hook(cfg)
    shardings = param_shardings(cfg, mesh) if mesh is not None else None
    params = load_params(HFDirSource(d), cfg, shardings)
    return Pretrained(cfg=cfg, params=params, tokenizer=load_tokenizer(d), path=d)


def load_tokenizer(path_or_dir: str | os.PathLike):
    """A `PreTrainedTokenizerFast` from a HF directory, its `tokenizer.json`, or a `.gguf` file.

    A directory needs `tokenizer.json` (plus optionally `tokenizer_config.json` for the special
    tokens and chat template); a directory holding a single `.gguf` and no `tokenizer.json` uses
    the GGUF. Files are read locally only, never downloaded.
    """
    p = Path(path_or_dir).expanduser()
    if not p.exists():
        raise WeightsError(f"tokenizer not found: {path_or_dir} does not exist")
    if p.is_file():
        if p.suffix == ".gguf":
            return gguf_tokenizer(p)
        if p.name in ("tokenizer.json", "tokenizer_config.json"):
            p = p.parent
        else:
            raise WeightsError(
                f"cannot load a tokenizer from {p}: give a Hugging Face model directory "
                "(with tokenizer.json) or a .gguf file")
    if not (p / "tokenizer.json").is_file():
        ggufs = sorted(p.glob("*.gguf"))
        if len(ggufs) == 1:
            return load_tokenizer(ggufs[0])
        raise WeightsError(
            f"{p} has no tokenizer.json"
            + (f" and several .gguf files ({[g.name for g in ggufs]}); pass one of them" if ggufs
               else "; jaxevo needs a fast-tokenizer file (save one with "
                    "`AutoTokenizer.from_pretrained(...).save_pretrained(dir)`)"))
    try:
        return PreTrainedTokenizerFast.from_pretrained(str(p), local_files_only=True)
    except Exception as e:
        raise WeightsError(f"cannot load the tokenizer in {p}: {type(e).__name__}: {e}") from e
