"""Which XLA:CPU dot path the train step compiles with on this machine.

No single path wins on every CPU (docs/benchmarks.md, "A CPU with AVX2 only"): on a CPU with
AVX512-BF16, XLA's own bf16 dots are the fast ones; on a CPU with neither AVX-512 nor bf16
instructions, YNNPACK's dot fusions run the demo's bf16 update about a third faster than jaxlib's
default. So the first train step on a machine times a forward and backward of a few MLP blocks in
the step's compute recipe (bf16 or f32 inputs, f32 accumulation) on each path and keeps the
result in jaxevo's cache (`$JAXEVO_CACHE/cpu_paths.json`), keyed by CPU, flags, jaxlib, widths and
compute dtype (a few seconds, once). The default path stays unless another is `MARGIN` faster:
the paths sum in different orders, so two probes of one machine that split a near-tie
differently would train differently. `JAXEVO_TRAIN_CPU_PATH=PATH` sets the path instead.
"""

from __future__ import annotations

import os
import statistics
import time

import jax
import jax.numpy as jnp
import jaxlib

from jaxevo.cpu_store import cpu_key, note, remembered
from jaxevo.errors import ConfigError
from jaxevo.models.layers import dense

# Per-program XLA:CPU compiler options of each path; the first is the default.
PATHS = {
    "xla": None,  # jaxlib's default: on 0.10.2 each dot is a YNNPACK call of its own
    # YNNPACK's dot fusions (dots fused with their neighbours)
    "ynnpack_dot": {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"},
}
DEFAULT = next(iter(PATHS))
ENV = "JAXEVO_TRAIN_CPU_PATH"
MARGIN = 0.05
PROBE_TOKENS = 512  # rows of the probe's products: a micro-batch's tokens, in order of magnitude
PROBE_BLOCKS = 2
# A large model's probe: widths capped and fewer tokens, so that it stays under a second a call
MAX_WIDTHS = (2048, 8192)
PROBE_FLOPS = 17e9  # about a forward and backward of the blocks at SmolLM2-135M's widths and 512 tokens
PROBE_TIMINGS = 5  # timings of each path, taking turns


def compiler_options(mesh, hidden: int, inter: int, compute_dtype) -> dict | None:
    """The train step's `jax.jit` compiler options on `mesh`: a CPU path's options, or None
    (the default path, and every accelerator). Measured on first use (`choose`)."""
    if mesh.devices.flat[0].platform != "cpu":
        return None
    return PATHS[choose(hidden, inter, jnp.dtype(compute_dtype).name)]


def choose(hidden: int, inter: int, compute: str) -> str:
    """The path for a model of widths E `hidden` and F `inter` computing in `compute`: the
    environment's, the default on several processes (each would time its own), else measured
    once per machine and cached."""
    env = os.environ.get(ENV, "").strip()
    what = f"train step dots (E{hidden} F{inter} {compute})"
    if env and env not in PATHS:
        raise ConfigError(f"{ENV}={env!r}: choose one of {sorted(PATHS)}")
    if env or jax.process_count() > 1:  # several processes must compile the same program
        note(f"{cpu_key()}|{what}|{env or DEFAULT}", what, env or DEFAULT, "env" if env else "default")
        return env or DEFAULT
    key = "|".join([cpu_key(), f"jaxlib {jaxlib.__version__}", "train step", f"E{hidden} F{inter} {compute}",
                    f"probe {PROBE_TOKENS} tokens"])

    def measure():
        seconds = probe_seconds(hidden, inter, compute)
        return {"path": pick(seconds), "seconds": seconds}

    entry, _ = remembered(key, lambda e: e.get("path") in PATHS, measure, what, lambda e: e["path"])
    return entry["path"]


def pick(seconds: dict[str, float]) -> str:
    """The fastest path of `probe_seconds`' median times, unless the default is within MARGIN."""
    best = min(seconds, key=seconds.get)
    return best if seconds[best] < (1 - MARGIN) * seconds[DEFAULT] else DEFAULT


def probe_seconds(hidden: int, inter: int, compute: str) -> dict[str, float]:
    """{path: median seconds} of a forward and backward of PROBE_BLOCKS MLP blocks (x [T, E] ->
    gate/up [E, 2F] -> SiLU-gated -> down [F, E], residual; f32 weights with a `compute` copy, as
    the train step holds them), T = PROBE_TOKENS, or fewer with the widths capped at MAX_WIDTHS
    for a model whose blocks would cost more than PROBE_FLOPS. The paths take turns, so a drift
    of the machine's speed reaches all of them."""
    dt = jnp.dtype(compute)
    hidden, inter = min(hidden, MAX_WIDTHS[0]), min(inter, MAX_WIDTHS[1])
    tokens = int(min(PROBE_TOKENS, max(64, PROBE_FLOPS // (2 * 3 * 3 * hidden * inter * PROBE_BLOCKS))))
    keys = jax.random.split(jax.random.key(0), 2 * PROBE_BLOCKS + 1)
    w = [(jax.random.normal(keys[2 * i], (hidden, 2 * inter)) * 0.02,
          jax.random.normal(keys[2 * i + 1], (inter, hidden)) * 0.02) for i in range(PROBE_BLOCKS)]
    x = jax.random.normal(keys[-1], (tokens, hidden)).astype(dt)

    def loss(w, x):
        for gu, down in w:
            g, u = jnp.split(dense(x, gu.astype(dt), "te,ef->tf", dt), 2, axis=-1)
            x = x + dense(jax.nn.silu(g) * u, down.astype(dt), "tf,fe->te", dt)
        return jnp.mean(jnp.square(x.astype(jnp.float32)))

    runs = {}
    for path, options in PATHS.items():
        f = jax.jit(jax.value_and_grad(loss), compiler_options=options)
        jax.block_until_ready(f(w, x))  # compile
        runs[path] = f
    times: dict[str, list[float]] = {path: [] for path in runs}
    for _ in range(PROBE_TIMINGS):
        for path, f in runs.items():
            t = time.perf_counter()
            jax.block_until_ready(f(w, x))
            times[path].append(time.perf_counter() - t)
    return {path: statistics.median(ts) for path, ts in times.items()}
