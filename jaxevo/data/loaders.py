"""File and library backed sources: plain JSONL, Hugging Face `datasets`, TFDS array_record.

`datasets` and `tensorflow_datasets` are imported inside the factories: importing them costs
seconds and most runs use only one (or neither).
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

from jaxevo.data.base import Source, register_source
from jaxevo.data.records import FIELD_MAP_KEYS, FieldMap
from jaxevo.data.schemas import map_row
from jaxevo.errors import ConfigError

__all__ = ["jsonl_source", "hf_source", "tfds_source", "read_jsonl"]

# Local file extensions -> the `datasets` packaged builder that reads them.
_HF_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


def _require_file(path: str | os.PathLike, key: str = "path") -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(f"{key}: file not found: {p}")
    return p


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Parse a JSONL file of objects (blank lines skipped); errors name the file and line."""
    return [row for _, row in read_jsonl_rows(path)]


def read_jsonl_rows(path: str | os.PathLike) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) pairs of a JSONL file; errors name the file and line."""
    p = _require_file(path)
    rows = []
    with p.open("rb") as f:  # bytes: a line that is not UTF-8 is named, not a traceback
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ConfigError(f"{p} line {lineno}: not UTF-8 text (byte {raw[e.start]:#04x} "
                                  f"at column {e.start + 1}); save the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{p} line {lineno}: invalid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ConfigError(f"{p} line {lineno}: expected a JSON object, got {type(row).__name__}")
            rows.append((lineno, row))
    return rows


@register_source("jsonl", keys=("path", *FIELD_MAP_KEYS))
def jsonl_source(spec: Mapping[str, Any]) -> Source:
    """``{"type": "jsonl", "path": "prompts.jsonl", "prompt_field": "question", ...}``.
    Default ids are ``"<file stem>/<record index>"``."""
    if "path" not in spec:
        raise ConfigError("jsonl source: 'path' is required")
    path = Path(spec["path"]).expanduser()
    fields = FieldMap.from_spec(spec)
    rows = read_jsonl_rows(path)
    records = [map_row(row, fields, f"{path.stem}/{i}", f"{path} line {lineno}")
               for i, (lineno, row) in enumerate(rows)]
    return Source.from_records(str(path), records, locate=lambda i: f"{path} line {rows[i][0]}")


def _looks_local(path: str) -> bool:
    return Path(path).suffix.lower() in _HF_BUILDERS or path.startswith(("/", ".", "~")) or os.path.exists(path)


@register_source("hf", keys=("path", "name", "data_files", "split", "cache_dir", "revision", *FIELD_MAP_KEYS))
def hf_source(spec: Mapping[str, Any]) -> Source:
    """A Hugging Face `datasets` split.

    ``path`` is a local .json/.jsonl/.csv/.parquet file (the builder is chosen from the
    extension), a local dataset directory, a packaged builder name with ``data_files``
    (``{"path": "csv", "data_files": [...]}``) or, when online, a hub name (``"openai/gsm8k"``
    with ``name: main``). ``split`` defaults to ``"train"`` and accepts slices (``"train[:100]"``).
    Default ids are ``"<path>/<split>/<row>"``.
    """
    if "path" not in spec:
        raise ConfigError("hf source: 'path' is required")
    datasets = _optional("datasets", "hf")

    path = str(spec["path"])
    split = spec.get("split", "train")
    kwargs: dict[str, Any] = {"split": split}
    for key in ("name", "cache_dir", "revision"):
        if spec.get(key) is not None:
            kwargs[key] = spec[key]
    data_files = spec.get("data_files")
    if data_files is not None:
        for f in [data_files] if isinstance(data_files, str) else list(data_files):
            _require_file(f, "data_files")
        builder = path
    elif _looks_local(path):
        local = _require_file(path)
        if local.is_file():
            builder = _HF_BUILDERS.get(local.suffix.lower())
            if builder is None:
                raise ConfigError(f"hf source: cannot read {local}: extension must be one of {sorted(_HF_BUILDERS)}")
            data_files = str(local)
        else:
            builder = str(local)
    else:
        builder = path  # a hub name; needs network the first time
    try:
        ds = datasets.load_dataset(builder, data_files=data_files, **kwargs)
    except (FileNotFoundError, ValueError, datasets.exceptions.DatasetNotFoundError) as e:
        raise ConfigError(f"hf source {path!r} (split {split!r}): {e}") from e
    if not isinstance(ds, datasets.Dataset):
        raise ConfigError(f"hf source {path!r}: expected one split, got {type(ds).__name__}; set 'split'")
    fields = FieldMap.from_spec(spec)
    label = Path(path).name if _looks_local(path) else path

    def get(i: int) -> dict[str, Any]:
        return map_row(ds[i], fields, f"{label}/{split}/{i}", f"{path} ({split}) row {i}")

    return Source(f"{path} ({split})", get, len(ds))


@register_source("tfds", keys=("name", "split", "data_dir", "download", *FIELD_MAP_KEYS))
def tfds_source(spec: Mapping[str, Any]) -> Source:
    """A TFDS split read with ``tfds.data_source`` (random access over array_record files; no
    TensorFlow needed). ``{"type": "tfds", "name": "gsm8k", "split": "test", "data_dir": ...}``.
    Text features arrive as bytes and are decoded to str. Default ids are
    ``"<name>/<split>/<index>"``; array_record order is fixed once the data set is built, so
    these are stable. ``download`` (default False: runs are offline-first) lets TFDS build a
    missing data set itself."""
    if "name" not in spec:
        raise ConfigError("tfds source: 'name' is required")
    tfds = _optional("tensorflow_datasets", "tfds")

    name, split = str(spec["name"]), spec.get("split", "train")
    data_dir = spec.get("data_dir")
    if data_dir is not None:
        _require_file(data_dir, "data_dir")
    try:
        ds = tfds.data_source(name, split=split, data_dir=data_dir, try_gcs=False,
                              download=bool(spec.get("download", False)))
    except tfds.core.registered.DatasetNotFoundError as e:
        # TFDS appends the names of all ~1,000 registered data sets; the first line is the news.
        first = str(e).splitlines()[0]
        raise ConfigError(f"tfds source: {first} (data_dir={data_dir}); build it with "
                          "file_format='array_record' first") from None
    except (ValueError, FileNotFoundError, NotImplementedError, AssertionError) as e:
        raise ConfigError(f"tfds source {name!r} (split {split!r}, data_dir={data_dir}): {e}") from e
    fields = FieldMap.from_spec(spec)

    def get(i: int) -> dict[str, Any]:
        return map_row(ds[i], fields, f"{name}/{split}/{i}", f"tfds {name} ({split}) index {i}")

    return Source(f"tfds:{name} ({split})", get, len(ds))


def _optional(module: str, source: str):
    """``module``, imported on first use (heavy, and an optional extra): a `ConfigError` naming
    the extra when it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(f"the {source} source needs the {module.replace('_', '-')} package, which "
                          f"a default install leaves out: pip install \"jaxevo[data]\" ({e})") from None
