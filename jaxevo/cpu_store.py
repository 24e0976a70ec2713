"""What this machine measured once and keeps in `$JAXEVO_CACHE/cpu_paths.json`: the CPU's
identity (model name, core count, flags), which keys each entry, and the store itself (read, or
measured and written). The sampler's dot-path choice (`sampling/cpu_choice.py`) and the train
step's (`train/cpu_dots.py`) keep their measurements here."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from pathlib import Path

from jaxevo.runtime import cache_dir


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    """True if the host CPU advertises bf16 dot-product instructions (x86 AVX512_BF16 / AMX-BF16,
    Arm BF16). Read from /proc/cpuinfo; False where that is unavailable."""
    return bool(cpuinfo()[1] & {"avx512_bf16", "amx_bf16", "bf16"})


@functools.lru_cache(maxsize=None)
def cpuinfo() -> tuple[str, frozenset[str]]:
    """(model name, flags) from /proc/cpuinfo; ("unknown cpu", {}) where it cannot be read."""
    model, flags = "unknown cpu", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "unknown cpu":
                    model = line.split(":", 1)[1].strip()
                elif line.startswith(("flags", "Features")):
                    flags |= set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return model, frozenset(flags)


def cpu_key() -> str:
    """This CPU's part of every entry's key: model name, core count and a digest of its flags."""
    model, flags = cpuinfo()
    digest = hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:12]
    return f"{model} ({os.cpu_count()} cpus, flags {digest})"


_seen: dict[tuple[str, str], dict] = {}  # entries this process has read or measured, by (store, key)


def forget() -> None:
    """Drop what this process remembers of the store (as a new process would start)."""
    _seen.clear()


def remembered(key: str, ok, measure) -> tuple[dict, bool]:
    """(entry, measured now) for `key`: this process's, else the store's if `ok(entry)`, else
    `measure()`'s, written to the store. A sampler made every online step reads no file."""
    store = cache_dir() / "cpu_paths.json"
    memo = (str(store), key)
    if memo not in _seen:
        entry = _read(store).get(key)
        if isinstance(entry, dict) and ok(entry):
            _seen[memo] = entry
        else:
            _seen[memo] = entry = {**measure(), "measured": time.time()}
            _write(store, key, entry)
            return entry, True
    return _seen[memo], False


def _read(store: Path) -> dict:
    try:
        data = json.loads(store.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):  # absent or damaged: measure again and rewrite it
        return {}


def _write(store: Path, key: str, entry: dict) -> None:
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        data = _read(store)
        data[key] = entry
        tmp = store.with_name(f"{store.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, store)
    except OSError:  # a read-only cache: the choice still holds for this process
        pass
