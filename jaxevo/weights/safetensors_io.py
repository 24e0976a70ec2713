"""Torch-free safetensors reading (memory-mapped, lazy per tensor) and writing, bf16 included.

The format is 8 bytes of little-endian header length, a JSON header
{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}, then raw data.
Reading it ourselves keeps bf16 (which numpy lacks; ml_dtypes has it) and lets a 70B checkpoint be
read tensor by tensor through mmap without loading a file whole.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from pathlib import Path
from typing import Iterable

import ml_dtypes
import numpy as np

from jaxevo.errors import WeightsError

DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}
NAMES = {np.dtype(v): k for k, v in DTYPES.items()}


class SafetensorsFile:
    """One `.safetensors` file; `get(name)` returns a read-only numpy view of the mmap."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(n))
                self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, struct.error, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise WeightsError(f"{self.path}: not a readable safetensors file ({e})") from e
        self.metadata = header.pop("__metadata__", {}) or {}
        self._header = header
        self._data_start = 8 + n
        # A file cut short (an interrupted copy or download) fails here, naming itself, rather
        # than deep in numpy when a tensor past its end is read.
        need = self._data_start + max((int(v["data_offsets"][1]) for v in header.values()
                                       if isinstance(v, dict) and "data_offsets" in v), default=0)
        if len(self._mm) < need:
            raise WeightsError(f"{self.path}: truncated safetensors file ({len(self._mm)} bytes, "
                               f"its header describes {need}); copy or download it again")

    def keys(self) -> Iterable[str]:
        return self._header.keys()

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._header[name]["shape"])

    def get(self, name: str) -> np.ndarray:
        info = self._header[name]
        if info["dtype"] not in DTYPES:
            raise WeightsError(f"{self.path}: tensor {name} has unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        arr = np.frombuffer(self._mm, dtype=DTYPES[info["dtype"]], count=int(np.prod(info["shape"], dtype=np.int64)),
                            offset=self._data_start + begin)
        if arr.nbytes != end - begin:
            raise WeightsError(f"{self.path}: tensor {name} is truncated or corrupt")
        return arr.reshape(info["shape"])


def write_safetensors(path: str | Path, tensors: Iterable[tuple[str, np.ndarray]],
                      metadata: dict[str, str] | None = None) -> None:
    """Write (name, array) pairs. Arrays are consumed one at a time after the header is planned.

    `tensors` is materialised to a list of (name, array) so the header can be written first; pass
    a generator per file (see `export.py`) to bound memory by one file's worth of tensors.
    """
    items = [(n, np.ascontiguousarray(a)) for n, a in tensors]
    header: dict = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for name, a in items:
        if a.dtype not in NAMES:
            raise WeightsError(f"cannot write tensor {name} of dtype {a.dtype}")
        header[name] = {"dtype": NAMES[a.dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # align the data start to 8 bytes, as safetensors does
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for _, a in items:
            f.write(a.tobytes())
    os.replace(tmp, path)
