"""What this machine measured once and keeps in `$JAXEVO_CACHE/cpu_paths.json`: the CPU's
identity (model name, core count, flags), which keys each entry, and the store itself (read, or
measured and written). The sampler's dot-path choice (`sampling/cpu_choice.py`) and the train
step's (`train/cpu_dots.py`) keep their measurements here, and note every choice they make
(`used`), so that a run can record which paths it ran on: two machines, or one machine before and
after its cache was emptied, can choose differently and sum in a different order."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable

import jaxlib

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
_used: dict[str, dict] = {}  # the choices this process made, by key (`used`)


def forget() -> None:
    """Drop what this process remembers of the store and of its choices (as a new process would
    start)."""
    _seen.clear()
    forget_used()


def forget_used() -> None:
    """Drop the choices noted so far (`used`): a run records only those it makes itself."""
    _used.clear()


def remembered(key: str, ok, measure, what: str, choice: Callable[[dict], str]) -> tuple[dict, bool]:
    """(entry, measured now) for `key`: this process's, else the store's if `ok(entry)`, else
    `measure()`'s, written to the store. A sampler made every online step reads no file. The
    choice is noted (`note`) as `what` = `choice(entry)`."""
    store = cache_dir() / "cpu_paths.json"
    memo = (str(store), key)
    fresh = memo not in _seen
    if fresh:
        entry = _read(store).get(key)
        if isinstance(entry, dict) and ok(entry):
            _seen[memo], fresh = entry, False
        else:
            _seen[memo] = entry = {**measure(), "measured": time.time()}
            _write(store, key, entry)
    entry = _seen[memo]
    note(key, what, choice(entry), "measured" if fresh else "cached", entry.get("measured"))
    return entry, fresh


def note(key: str, what: str, choice: str, source: str, measured: float | None = None) -> None:
    """Note that this process chose `choice` (e.g. "ynnpack:float32") for `what` (e.g. "sampler
    dots and weights (E576 F1536 bfloat16, 64 rows)"), from `source`: "measured", "cached"
    (both measured at time `measured`), "env" or "default"."""
    if key not in _used:
        _used[key] = {"what": what, "choice": choice, "source": source, "measured": measured,
                      "machine": f"{cpu_key()}, jaxlib {jaxlib.__version__}"}


def used() -> dict[str, dict]:
    """The choices this process has made, by key: {"what", "choice", "source", "measured" (the
    measurement's time, or None), "machine"} (see `note`). The first one noted for a key stays."""
    return {k: dict(v) for k, v in _used.items()}


def used_summary() -> dict[str, str]:
    """`used` for a command's summary: {what: "choice (source)"}."""
    return {e["what"]: f"{e['choice']} ({e['source']})" for e in _used.values()}


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
