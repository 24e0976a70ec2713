"""Matmul GFLOP/s of XLA:CPU (each of its dot paths) and torch on the sampler's and the train step's
shapes, in f32 and bf16: which path reaches the CPU's bf16 units (AVX512-BF16, AMX), if any.

    python benchmarks/matmul.py                     # every shape, path and dtype recipe
    python benchmarks/matmul.py --quick             # two shapes, for a smoke run
    python benchmarks/matmul.py --quick --no-torch  # XLA's paths only
    python benchmarks/matmul.py --repeats 7         # the default: the best of 7 timed runs
    python benchmarks/matmul.py --out benchmarks/results/matmul_<cpu>.json

XLA paths (per-program compiler options, as `jaxevo.sampling.placement` sets them): jaxlib's
default (on jaxlib 0.10.2 each dot is a YNNPACK call of its own); YNNPACK's DOT and INDIVIDUAL_DOT
fusion types; no library at all (XLA's own dot); XNNPACK for dots; oneDNN fusions for dots.
Dtype recipes: f32; bf16 inputs with f32 accumulation and output (the sampler's and the train
step's recipe); bf16 inputs and output. torch runs each shape in f32 and bf16 at its default
thread count. Best of 7 timings of `--iters` back-to-back calls each; the same operands for every
system. Machine facts (/proc/cpuinfo model name, amx_bf16, avx512_bf16) are printed beside the table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from generate_e2e import cpu_facts

# (name, M, K, N): SmolLM2-135M (hidden 576, MLP 1536, vocab 49152); M = rows of the product.
SHAPES = [
    ("decode gate/up, 64 rows", 64, 576, 3072),
    ("decode down, 64 rows", 64, 1536, 576),
    ("decode lm_head, 64 rows", 64, 576, 49152),
    ("prefill / train fwd gate/up, 2560 rows", 2560, 576, 3072),
    ("train dW of gate/up (K = 2560 tokens)", 576, 2560, 3072),
    ("train lm_head fwd, 2560 rows", 2560, 576, 49152),
]
XLA_PATHS = {
    "xla default": None,
    "xla ynnpack": {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"},
    "xla ynnpack individual": {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"},
    "xla no library": {"xla_cpu_experimental_ynn_fusion_type": ""},
    "xla xnnpack": {"xla_cpu_experimental_xnn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"},
    "xla onednn": {"xla_cpu_experimental_onednn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"},
}
RECIPES = ("f32", "bf16 in, f32 out", "bf16 in, bf16 out")


def best_seconds(fn, iters: int, repeats: int) -> float:
    """The best of `repeats` timed runs of `iters` calls, per call, after one untimed call."""
    fn()
    best = 1e9
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(iters):
            r = fn()
        getattr(r, "block_until_ready", lambda: None)()
        best = min(best, (time.perf_counter() - t) / iters)
    return best


def xla_gflops(m: int, k: int, n: int, recipe: str, options, iters: int, repeats: int) -> float | str:
    import jax
    import jax.numpy as jnp

    dt = jnp.float32 if recipe == "f32" else jnp.bfloat16
    out = jnp.bfloat16 if recipe == "bf16 in, bf16 out" else jnp.float32
    a = jax.random.normal(jax.random.key(0), (m, k), jnp.float32).astype(dt)
    w = jax.random.normal(jax.random.key(1), (k, n), jnp.float32).astype(dt)
    f = jax.jit(lambda a, w: jnp.dot(a, w, preferred_element_type=out), compiler_options=options)
    try:
        return 2 * m * k * n / best_seconds(lambda: f(a, w), iters, repeats) / 1e9
    except Exception as e:  # an option this jaxlib does not take: say so in the table
        return f"error: {str(e).splitlines()[0][:80]}"


def torch_gflops(m: int, k: int, n: int, recipe: str, iters: int, repeats: int) -> float | str:
    import torch

    if recipe == "bf16 in, f32 out":
        return "n/a"  # torch's bf16 matmul accumulates in f32 and returns bf16: the next row
    dt = torch.float32 if recipe == "f32" else torch.bfloat16
    a, w = torch.randn(m, k).to(dt), torch.randn(k, n).to(dt)
    return 2 * m * k * n / best_seconds(lambda: a @ w, iters, repeats) / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--no-torch", action="store_true",
                   help="XLA's paths only (torch's bf16 matmul can run at ~1 GFLOP/s on a CPU without bf16)")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--repeats", type=int, default=7, help="timed runs of --iters calls, the best kept")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    shapes = SHAPES[:1] + SHAPES[3:4] if args.quick else SHAPES
    columns = (*XLA_PATHS,) if args.no_torch else (*XLA_PATHS, "torch")
    threads = None
    if not args.no_torch:
        import torch

        threads = torch.get_num_threads()
    res = {"machine": cpu_facts(), "torch_threads": threads, "rows": []}
    print(json.dumps(res["machine"]), f"torch threads {threads}")
    for name, m, k, n in shapes:
        iters = max(1, args.iters if m * k * n < 1e9 else args.iters // 5)
        for recipe in RECIPES:
            row = {"shape": name, "mkn": [m, k, n], "recipe": recipe}
            for path, opts in XLA_PATHS.items():
                row[path] = xla_gflops(m, k, n, recipe, opts, iters, args.repeats)
            if not args.no_torch:
                row["torch"] = torch_gflops(m, k, n, recipe, iters, args.repeats)
            res["rows"].append(row)
            cells = "  ".join(f"{c}: {row[c]:6.1f}" if isinstance(row[c], float) else f"{c}: {row[c]}"
                              for c in columns)
            print(f"{name:40s} {recipe:18s} {cells}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
