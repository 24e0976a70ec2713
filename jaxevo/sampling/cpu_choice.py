"""Which XLA:CPU dot path, decode-weight storage dtype and attention-score form the sampler uses
on this machine.

No single choice wins on every CPU (docs/benchmarks.md, "CPU matmul paths"): YNNPACK's fused dots
are the faster ones for f32 weights on an AVX-512 CPU without bf16 instructions and jaxlib's
default dots the faster for bf16 weights on a CPU with AVX512-BF16, where the fused bf16 dot runs
at a third of their speed; at one row, f32 storage can beat bf16. So the first sampler on a
machine times each candidate once, on decode-shaped products of its model's widths (a chain of
MLP blocks large enough to stream from memory, as a decode step does), and keeps the fastest in
jaxevo's cache (`$JAXEVO_CACHE/cpu_paths.json`), keyed by CPU, flags, jaxlib, widths and row regime
(the static choice unless another is PATH_MARGIN faster: near-ties must not flip between probes).
Then, with the weights made, the form of the decode step's attention scores (`decode.SCORES`:
batched [G, D] @ [D, S] products, or elementwise products summed over D) is timed on a few real
decode steps of the model and cached the same way: on an Intel Xeon the second saves 12 % of a
step, while a probe of the attention alone shows no difference (docs/benchmarks.md).
`JAXEVO_CPU_PATH=PATH:DTYPE[:SCORES]` (e.g. `xla:bfloat16`, `ynnpack:float32:reduce`) sets the
choice instead.

Every candidate computes the same products: weights are rounded to the compute dtype before an
f32 copy is stored (`decode.prepare_weights`), attention operands are exact in f32, and only the
kernels' summation order differs.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import statistics
import time

import jax
import jax.numpy as jnp
import jaxlib
from jax import lax

from jaxevo.cpu_store import cpu_has_native_bf16, cpu_key, note, remembered
from jaxevo.errors import ConfigError
from jaxevo.models import decode
from jaxevo.models.config import ModelConfig
from jaxevo.models.layers import FUSED, dense
from jaxevo.models.transformer import visible_mask

# Per-program XLA:CPU compiler options of each dot path.
PATHS = {
    # jaxlib's default: on 0.10.2 each dot is a YNNPACK call of its own (`ynn_fusion` in the HLO)
    "xla": None,
    # YNNPACK fusion types DOT and REDUCE (dots fused with their neighbours; reductions), not
    # ELTWISE: its small elementwise fusions cost more than XLA's loops.
    "ynnpack": {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE"},
}
DEFAULT_PATH = "ynnpack"  # where nothing is measured (several processes on one mesh)
ENV = "JAXEVO_CPU_PATH"
# Part of every stored choice's key: what the probes time (entries measured with the weights stored
# [out, in], which the decode programs then transposed on every call, are measured again).
PROBE_KEY = "weights [in, out]"
SMALL_ROWS = 8  # samplers of at most this many rows are timed at 1 row, larger ones at 64
PROBE_BYTES = 48 << 20  # weights in the probe chain (bf16): more than a CPU's caches hold
PROBE_SLOTS = 224  # cache slots of the decode steps timed for the score form
PROBE_LAYERS = 8  # ... and their layers
# The score forms sum in different orders, so they can flip a greedy near-tie: the form other than
# the first (the default) is kept only when its median time is this much lower, so that two probes
# of one machine (fresh caches) do not give runs different completions. Medians of many
# interleaved timings vary far less between probes than the best of a few (docs/benchmarks.md).
SCORE_MARGIN = 0.02
# Likewise the dot path and weight dtype: the static choice (`static_choice`) stays unless another
# candidate's best time is this much lower. On an AVX2-only EPYC, where whole sampler calls on
# `xla` and `ynnpack` take the same time (within 2%), four probes put `xla` 1% behind to 13.5%
# ahead; the wins that matter elsewhere are 27% and more (docs/benchmarks.md, session 45).
PATH_MARGIN = 0.2
SCORE_TIMINGS = 10  # timings of each form, taking turns


@dataclasses.dataclass(frozen=True)
class CpuChoice:
    path: str  # a key of PATHS
    matmul_dtype: str  # storage dtype of the decode weights
    seconds: tuple[tuple[str, float], ...] = ()  # "path:dtype" -> probe time, when measured
    source: str = "default"  # "measured", "cached", "env" or "default"
    scores: str = "dot"  # the decode attention's score form, one of decode.SCORES
    score_seconds: tuple[tuple[str, float], ...] = ()  # score form -> decode-step time, when measured

    @property
    def label(self) -> str:
        """E.g. "ynnpack:float32, scores reduce (cached)": paths sum in different orders, so runs
        on different ones can differ in their completions."""
        return f"{self.path}:{self.matmul_dtype}, scores {self.scores} ({self.source})"


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
    probe_rows = 1 if rows <= SMALL_ROWS else 64
    compute = jnp.dtype(cfg.dtype).name
    if env or jax.process_count() > 1:  # several processes decode with the same weights: no local timing
        c = _from_env(env, dtypes) if env else static_choice(cfg, matmul_dtype)
        what = _what(cfg.hidden_size, cfg.intermediate_size, compute, probe_rows)
        note(f"{cpu_key()}|{what}|{env}", what, f"{c.path}:{c.matmul_dtype}" + (f", scores {c.scores}" if env else ""),
             c.source)
        return c
    default = static_choice(cfg, matmul_dtype)
    return _measured(cfg.hidden_size, cfg.intermediate_size, compute, probe_rows, dtypes,
                     f"{default.path}:{default.matmul_dtype}")


def same_regime(rows_a: int, rows_b: int) -> bool:
    """Do samplers of up to `rows_a` and `rows_b` rows get the same choice (both timed at one row,
    or both at 64), so that they can share their prepared weights?"""
    return (rows_a <= SMALL_ROWS) == (rows_b <= SMALL_ROWS)


def candidate_dtypes(cfg: ModelConfig) -> tuple[str, ...]:
    dt = jnp.dtype(cfg.dtype).name
    return (dt, "float32") if jnp.dtype(cfg.dtype).itemsize == 2 else (dt,)


def _from_env(env: str, dtypes: tuple[str, ...]) -> CpuChoice:
    path, _, rest = env.partition(":")
    dtype, _, scores = rest.partition(":")
    if (path not in PATHS or (dtype and dtype not in ("bfloat16", "float16", "float32"))
            or (scores and scores not in decode.SCORES)):
        raise ConfigError(f"{ENV}={env!r}: give PATH, PATH:DTYPE or PATH:DTYPE:SCORES with PATH one of "
                          f"{sorted(PATHS)}, DTYPE bfloat16, float16 or float32 and SCORES one of "
                          f"{list(decode.SCORES)} (e.g. xla:bfloat16 or xla:bfloat16:reduce)")
    return CpuChoice(path, dtype or dtypes[0], source="env", scores=scores or "dot")


def choose_scores(cfg: ModelConfig, weights: dict, rows: int, choice: CpuChoice) -> CpuChoice:
    """`choice` with the decode attention's score form for a sampler of up to `rows` rows on the
    prepared `weights`: measured once per machine, model shape and dot path, and cached; set by
    the environment, or "dot" on several processes or for at most SMALL_ROWS rows, where nothing
    is timed. Costs two compilations of a decode step, once."""
    if choice.source == "env":
        return choice
    probe_rows = 64
    shape = f"{_shape_key(cfg)}, {choice.path}:{choice.matmul_dtype}"
    if jax.process_count() > 1 or rows <= SMALL_ROWS:
        # at a few rows the attention is a small part of a step: not worth a probe
        regime = "1 row" if rows <= SMALL_ROWS else "several processes"
        note(f"{cpu_key()}|default scores|{shape}|{regime}", f"attention scores ({shape}, {regime})",
             choice.scores, "default")
        return choice
    key = "|".join([cpu_key(), f"jaxlib {jaxlib.__version__}", PROBE_KEY, "scores by median", _shape_key(cfg),
                    f"{choice.path}:{choice.matmul_dtype}", f"rows {probe_rows}"])

    def measure():
        seconds = probe_scores(cfg, weights, probe_rows, choice.path)
        return {"scores": pick_scores(seconds), "seconds": seconds}

    e, _ = remembered(key, lambda e: e.get("scores") in decode.SCORES, measure,
                      f"attention scores ({shape}, {probe_rows} rows)", lambda e: e["scores"])
    return dataclasses.replace(choice, scores=e["scores"], score_seconds=tuple(sorted(e.get("seconds", {}).items())))


def pick_scores(seconds: dict[str, float]) -> str:
    """The score form to use from `probe_scores`' median times: the fastest, unless the default
    form (``decode.SCORES[0]``) is within SCORE_MARGIN of it."""
    default, best = decode.SCORES[0], min(seconds, key=seconds.get)
    return best if seconds[best] < (1 - SCORE_MARGIN) * seconds[default] else default


def probe_scores(cfg: ModelConfig, weights: dict, rows: int, path: str, steps: int = 4,
                 timings: int = SCORE_TIMINGS) -> dict[str, float]:
    """{score form: median time per decode step} of `timings` runs of `steps` real decode steps
    (`decode.decode_step` on the prepared `weights` of the first PROBE_LAYERS layers, `rows` rows,
    a PROBE_SLOTS-slot cache updated in place, masks as the sampler makes them), compiled for
    `path` with each form. The forms take turns, so a drift of the machine's speed reaches both.
    The attention alone does not tell: in a probe of it (constant masks, no projections) both
    forms took the same time where whole steps differ."""
    # the model's first PROBE_LAYERS layers (compiling all of them would cost seconds more)
    n = min(cfg.num_layers, PROBE_LAYERS)
    cfg, weights = cfg.replace(num_layers=n), {**weights, "layers": weights["layers"][:n]}
    # a prompt of 64 slots, left-padded by a few slots in odd rows; then the generated slots
    valid = jnp.arange(PROBE_SLOTS) >= 2 * (jnp.arange(rows) % 2)[:, None]
    plen = jnp.sum(valid[:, :64], axis=1, dtype=jnp.int32)

    def run(weights, cache, tokens, valid, plen, form):
        def step(i, c):
            tokens, cache = c
            slot = PROBE_SLOTS - steps + i
            visible = visible_mask(valid, jnp.full((rows, 1), slot))[:, 0]
            lg, cache = decode.decode_step(cfg, weights, cache, tokens, plen + slot - 64, slot, visible,
                                           scores=form)
            return jnp.argmax(lg, axis=-1).astype(jnp.int32), cache
        return lax.fori_loop(0, steps, step, (tokens, cache))

    runs = {}
    for form in decode.SCORES:
        f = jax.jit(functools.partial(run, form=form), compiler_options=PATHS[path], donate_argnums=(1,))
        tokens, cache = f(weights, decode.init_cache(cfg, rows, PROBE_SLOTS), jnp.zeros((rows,), jnp.int32),
                          valid, plen)
        runs[form] = [f, cache, tokens]
    times: dict[str, list[float]] = {form: [] for form in runs}
    for _ in range(timings):
        for form, r in runs.items():
            t = time.perf_counter()
            r[2], r[1] = jax.block_until_ready(r[0](weights, r[1], r[2], valid, plen))
            times[form].append((time.perf_counter() - t) / steps)
    return {form: statistics.median(ts) for form, ts in times.items()}


def pick_path(seconds: dict[str, float], default: str) -> str:
    """The "path:dtype" to use from `probe_seconds`' times: the fastest, unless `default` (the
    static choice) is within PATH_MARGIN of it."""
    best = min(seconds, key=seconds.get)
    return best if seconds[best] < (1 - PATH_MARGIN) * seconds[default] else default


def _measured(hidden: int, inter: int, compute: str, rows: int, dtypes: tuple[str, ...], default: str) -> CpuChoice:
    key = "|".join([cpu_key(), f"jaxlib {jaxlib.__version__}", PROBE_KEY, f"E{hidden} F{inter} {compute}",
                    f"rows {rows}", ",".join(dtypes), f"margin {PATH_MARGIN} over {default}"])

    def measure():
        seconds = probe_seconds(hidden, inter, compute, rows, [(p, d) for d in dtypes for p in PATHS])
        path, dtype = pick_path(seconds, default).split(":")
        return {"path": path, "matmul_dtype": dtype, "seconds": seconds}

    e, fresh = remembered(key, lambda e: e.get("path") in PATHS and e.get("matmul_dtype") in dtypes, measure,
                          _what(hidden, inter, compute, rows), lambda e: f"{e['path']}:{e['matmul_dtype']}")
    return CpuChoice(e["path"], e["matmul_dtype"], tuple(sorted(e.get("seconds", {}).items())),
                     "measured" if fresh else "cached")


def probe_seconds(hidden: int, inter: int, compute: str, rows: int, candidates: list[tuple[str, str]],
                  repeats: int = 5) -> dict[str, float]:
    """{"path:dtype": best time} of one pass through a chain of L MLP blocks (x [rows, 1, E] ->
    gate/up [E, 2F] -> SiLU-gated -> down [F, E], residual), the weights stored in dtype and laid
    out as the sampler stores them. The candidates take turns, so a burst of load from elsewhere
    falls on all."""
    layers = max(1, min(16, PROBE_BYTES // (2 * 3 * hidden * inter)))
    keys = jax.random.split(jax.random.key(0), 2 * layers)
    dt = jnp.dtype(compute)
    w = [(jax.random.normal(keys[2 * i], (hidden, 2 * inter), dt),
          jax.random.normal(keys[2 * i + 1], (inter, hidden), dt) * 0.02) for i in range(layers)]
    x = jnp.full((rows, 1, hidden), 0.1, dt)

    def chain(x, w):
        for gu, down in w:
            g, u = jnp.split(dense(x, gu, FUSED, dt), 2, axis=-1)
            x = x + dense(jax.nn.silu(g) * u, down, FUSED, dt)
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


def _what(hidden: int, inter: int, compute: str, rows: int) -> str:
    return f"sampler dots and weights (E{hidden} F{inter} {compute}, {'1 row' if rows == 1 else f'{rows} rows'})"


def _shape_key(cfg: ModelConfig) -> str:
    return (f"L{cfg.num_layers} E{cfg.hidden_size} F{cfg.intermediate_size} H{cfg.num_heads} "
            f"K{cfg.num_kv_heads} D{cfg.head_dim} V{cfg.vocab_size} {jnp.dtype(cfg.dtype).name}")
