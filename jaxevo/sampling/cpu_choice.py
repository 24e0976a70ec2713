"""Which XLA:CPU dot path and decode-weight storage dtype the sampler uses on this machine.

No single choice wins on every CPU (docs/benchmarks.md, "CPU matmul paths"): YNNPACK's dots are
the faster ones for f32 weights on an AVX-512 CPU without bf16 instructions and XLA's own the
faster for bf16 weights on a CPU with AVX512-BF16, where YNNPACK's bf16 dot runs at a third of
their speed; at one row, f32 storage can beat bf16. So the first sampler on a machine times each
candidate once, on decode-shaped products of its model's widths (a chain of MLP blocks large enough
to stream from memory, as a decode step does), and keeps the fastest in jaxevo's cache
(`$JAXEVO_CACHE/cpu_paths.json`), keyed by CPU, flags, jaxlib, widths and row regime.
`JAXEVO_CPU_PATH=PATH:DTYPE` (e.g. `xla:bfloat16`, `ynnpack:float32`) sets the choice instead.

Every candidate computes the same products: weights are rounded to the compute dtype before an
f32 copy is stored (`decode.prepare_weights`), and only the kernel's summation order differs.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import jaxlib

from jaxevo.errors import ConfigError
from jaxevo.models.config import ModelConfig
from jaxevo.models.layers import dense
from jaxevo.runtime import cache_dir

# Per-program XLA:CPU compiler options of each dot path.
PATHS = {
    "xla": None,  # XLA's own dot emitter (Eigen / its tiled kernels)
    # YNNPACK for dots and reductions only: its small elementwise fusions cost more than XLA's loops.
    "ynnpack": {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE"},
}
DEFAULT_PATH = "ynnpack"  # where nothing is measured (several processes on one mesh)
ENV = "JAXEVO_CPU_PATH"
SMALL_ROWS = 8  # samplers of at most this many rows are timed at 1 row, larger ones at 64
PROBE_BYTES = 48 << 20  # weights in the probe chain (bf16): more than a CPU's caches hold


@dataclasses.dataclass(frozen=True)
class CpuChoice:
    path: str  # a key of PATHS
    matmul_dtype: str  # storage dtype of the decode weights
    seconds: tuple[tuple[str, float], ...] = ()  # "path:dtype" -> probe time, when measured
    source: str = "default"  # "measured", "cached", "env" or "default"


def static_choice(cfg: ModelConfig, matmul_dtype: str | None = None) -> CpuChoice:
    """The rule used without a measurement: YNNPACK dots; f32 storage of 16-bit weights on a CPU
    without bf16 dot instructions (its bf16 kernels convert to f32 inside anyway)."""
    if matmul_dtype is None:
        half = jnp.dtype(cfg.dtype).itemsize == 2
        matmul_dtype = "float32" if half and not cpu_has_native_bf16() else jnp.dtype(cfg.dtype).name
    return CpuChoice(DEFAULT_PATH, matmul_dtype)


def choose(cfg: ModelConfig, rows: int, matmul_dtype: str | None = None) -> CpuChoice:
    """The dot path and weight dtype for a CPU sampler of `cfg` decoding up to `rows` rows at a
    time (`matmul_dtype` given: only the path is chosen). Measured once per machine and cached."""
    dtypes = (matmul_dtype,) if matmul_dtype else candidate_dtypes(cfg)
    env = os.environ.get(ENV, "").strip()
    if env:
        return _from_env(env, dtypes)
    if jax.process_count() > 1:  # every process must decode with the same weights: no local timing
        return static_choice(cfg, matmul_dtype)
    probe_rows = 1 if rows <= SMALL_ROWS else 64
    return _measured(cfg.hidden_size, cfg.intermediate_size, jnp.dtype(cfg.dtype).name, probe_rows, dtypes)


def candidate_dtypes(cfg: ModelConfig) -> tuple[str, ...]:
    dt = jnp.dtype(cfg.dtype).name
    return (dt, "float32") if jnp.dtype(cfg.dtype).itemsize == 2 else (dt,)


def _from_env(env: str, dtypes: tuple[str, ...]) -> CpuChoice:
    path, _, dtype = env.partition(":")
    if path not in PATHS or (dtype and dtype not in ("bfloat16", "float16", "float32")):
        raise ConfigError(f"{ENV}={env!r}: give PATH or PATH:DTYPE with PATH one of {sorted(PATHS)} "
                          "and DTYPE bfloat16, float16 or float32 (e.g. xla:bfloat16)")
    return CpuChoice(path, dtype or dtypes[0], source="env")


@functools.lru_cache(maxsize=None)
def _measured(hidden: int, inter: int, compute: str, rows: int, dtypes: tuple[str, ...]) -> CpuChoice:
    key = "|".join([_cpu_key(), f"jaxlib {jaxlib.__version__}", f"E{hidden} F{inter} {compute}",
                    f"rows {rows}", ",".join(dtypes)])
    store = cache_dir() / "cpu_paths.json"
    known = _read(store)
    k = known.get(key)
    if isinstance(k, dict) and k.get("path") in PATHS and k.get("matmul_dtype") in dtypes:
        return CpuChoice(k["path"], k["matmul_dtype"], tuple(sorted(k.get("seconds", {}).items())), "cached")
    seconds = probe_seconds(hidden, inter, compute, rows, [(p, d) for d in dtypes for p in PATHS])
    best = min(seconds, key=seconds.get)
    path, dtype = best.split(":")
    _write(store, key, {"path": path, "matmul_dtype": dtype, "seconds": seconds, "measured": time.time()})
    return CpuChoice(path, dtype, tuple(sorted(seconds.items())), "measured")


def probe_seconds(hidden: int, inter: int, compute: str, rows: int, candidates: list[tuple[str, str]],
                  repeats: int = 5) -> dict[str, float]:
    """{"path:dtype": best time} of one pass through a chain of L MLP blocks (x [rows, 1, E] ->
    gate/up [2F, E] -> SiLU-gated -> down [E, F], residual), the weights stored in dtype as the
    sampler stores them. The candidates take turns, so a burst of load from elsewhere falls on all."""
    layers = max(1, min(16, PROBE_BYTES // (2 * 3 * hidden * inter)))
    keys = jax.random.split(jax.random.key(0), 2 * layers)
    dt = jnp.dtype(compute)
    w = [(jax.random.normal(keys[2 * i], (2 * inter, hidden), dt),
          jax.random.normal(keys[2 * i + 1], (hidden, inter), dt) * 0.02) for i in range(layers)]
    x = jnp.full((rows, 1, hidden), 0.1, dt)

    def chain(x, w):
        for gu, down in w:
            g, u = jnp.split(dense(x, gu, "...i,oi->...o", dt), 2, axis=-1)
            x = x + dense(jax.nn.silu(g) * u, down, "...i,oi->...o", dt)
        return x

    runs = {}
    for path, storage in candidates:
        ws = jax.tree.map(lambda a: a.astype(storage), w)  # noqa: B023 (used at once)
        f = jax.jit(chain, compiler_options=PATHS[path])
        f(x, ws).block_until_ready()  # compile
        runs[f"{path}:{storage}"] = (f, ws)
    iters = max(1, min(100, int(2e9 // (2 * rows * layers * 3 * hidden * inter))))  # <= ~2 GFLOP a timing
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, (f, ws) in runs.items():
            t = time.perf_counter()
            for _ in range(iters):
                r = f(x, ws)
            r.block_until_ready()
            best[name] = min(best[name], (time.perf_counter() - t) / iters)
    return best


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    """True if the host CPU advertises bf16 dot-product instructions (x86 AVX512_BF16 / AMX-BF16,
    Arm BF16). Read from /proc/cpuinfo; False where that is unavailable."""
    return bool(_cpuinfo()[1] & {"avx512_bf16", "amx_bf16", "bf16"})


@functools.lru_cache(maxsize=None)
def _cpuinfo() -> tuple[str, frozenset[str]]:
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


def _cpu_key() -> str:
    model, flags = _cpuinfo()
    digest = hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:12]
    return f"{model} ({os.cpu_count()} cpus, flags {digest})"


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
