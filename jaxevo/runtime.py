"""Process-wide settings every entry point wants: where jaxevo caches things, and JAX's
compilation cache there (with a count of what it saved, printed when a command ends)."""

from __future__ import annotations

import dataclasses
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
    _count_compiles()
    return d


@dataclasses.dataclass
class CompileCounts:
    """XLA programs this process asked the persistent cache for, how many it found there, and
    the seconds spent compiling or loading them (JAX's monitoring events)."""

    requests: int = 0
    hits: int = 0
    seconds: float = 0.0


COMPILES = CompileCounts()
_LISTENING = []


def _count_compiles() -> None:
    if _LISTENING:
        return

    def on_event(event: str, **_) -> None:
        if event == "/jax/compilation_cache/compile_requests_use_cache":
            COMPILES.requests += 1
        elif event == "/jax/compilation_cache/cache_hits":
            COMPILES.hits += 1

    def on_duration(event: str, duration: float, **_) -> None:
        if event == "/jax/core/compile/backend_compile_duration":  # compile or cache load
            COMPILES.seconds += duration

    jax.monitoring.register_event_listener(on_event)
    jax.monitoring.register_event_duration_secs_listener(on_duration)
    _LISTENING.append((on_event, on_duration))


def compile_summary() -> str | None:
    """One line for the end of a command: how many XLA programs came from the persistent cache
    (a rerun, or a later round, loads what an earlier one compiled). None if none was asked for."""
    c = COMPILES
    if not c.requests:
        return None
    where = jax.config.jax_compilation_cache_dir
    return (f"XLA programs: {c.hits} of {c.requests} loaded from the compilation cache, "
            f"{c.requests - c.hits} compiled; {c.seconds:.0f} s compiling or loading ({where})")


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
