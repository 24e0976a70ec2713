"""Process-wide settings every entry point wants: where jaxevo caches things, and JAX's
compilation cache there."""

from __future__ import annotations

import os
import time
from pathlib import Path

import jax


def cache_dir() -> Path:
    """jaxevo's cache root (`$JAXEVO_CACHE`, default ~/.cache/jaxevo): converted GGUF models and
    compiled XLA programs live under it."""
    return Path(os.environ.get("JAXEVO_CACHE", Path.home() / ".cache" / "jaxevo"))


# Bounded (least recently used entries go first). A bound also makes JAX lock the folder around
# every read and write: without it, two jaxevo processes compiling the same program (an evolve and
# an eval side by side, a test suite and its subprocesses) could read an entry while the other
# was still writing it, and a torn executable aborted the reading process.
CACHE_MAX_BYTES = 4 << 30


OFF = ("off", "0", "none", "false")


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path | None:
    """Persist compiled XLA programs ($JAXEVO_CACHE/xla by default): a round recompiles the same
    sampler and train step every round and every rerun; with the cache it loads them instead.
    ``JAXEVO_XLA_CACHE=off`` leaves the cache off (returns None)."""
    setting = os.environ.get("JAXEVO_XLA_CACHE", "")
    if path is None and setting.lower() in OFF and setting:
        return None
    d = Path(path or setting or cache_dir() / "xla")
    d.mkdir(parents=True, exist_ok=True)
    _stamp_unbounded_entries(d)
    jax.config.update("jax_compilation_cache_dir", str(d))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)
    return d


def _stamp_unbounded_entries(d: Path) -> None:
    """Give every entry written without a bound (older jaxevo) the access-time file a bounded cache
    keeps beside it (JAX's `lru_cache`: `KEY-cache` and `KEY-atime`): without one, the size check
    before each write fails and nothing new is cached."""
    now = time.time_ns().to_bytes(8, "little")
    for entry in d.glob("*-cache"):
        atime = entry.with_name(entry.name[: -len("-cache")] + "-atime")
        if not atime.exists():
            try:
                atime.write_bytes(now)
            except OSError:  # a read-only or shared folder: JAX then reports its own error
                return
