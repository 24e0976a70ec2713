"""Where a 64-row decode step's time goes: its matmuls alone vs the whole step, by cache length.

    python benchmarks/decode_step.py [--rows 64] [--slots 32 128 224 320]

Prints, measured in the same run on the embedded SmolLM2-135M sampler:
  * XLA's dot on one cache-resident [rows,576]@[576,1536] matrix (the limit probe of sampler.py);
  * every matmul of a decode step on the sampler's own prepared weights, each read once
    (`sampler._weights_pass`): the step's matmul time when the weights stream from memory;
  * one jitted `decode_step` (donated cache) at several cache lengths: what grows with the slots
    attended, and what stays (the step minus its matmuls = per-step work outside them).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from sampler import MODEL, _weights_pass  # noqa: E402


def best_of(fn, n: int) -> float:
    best = 1e9
    for _ in range(n):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--slots", type=int, nargs="+", default=[32, 128, 224, 320])
    args = p.parse_args()
    import jax
    import jax.numpy as jnp

    from jaxevo.models import decode
    from jaxevo.sampling import Sampler

    s = Sampler.load(MODEL, dtype="bfloat16", max_batch=args.rows)
    cfg, w, n = s.cfg, s.weights, args.rows
    print(f"decode step, {n} rows; weights stored as {w['lm_head'].dtype}; load {os.getloadavg()[0]:.1f}")
    a, m = jnp.ones((n, 576), jnp.float32), jnp.ones((576, 1536), jnp.float32)
    f = jax.jit(lambda a, m: jnp.einsum("be,ef->bf", a, m, preferred_element_type=jnp.float32))
    f(a, m).block_until_ready()
    single = best_of(lambda: [f(a, m) for _ in range(30)][-1].block_until_ready(), 5) / 30
    single_gf = 2 * n * 576 * 1536 / single / 1e9
    wp = _weights_pass(s, n)  # best of 7
    print(f"  one cache-resident 576x1536 matrix: {single_gf:.0f} GFLOP/s")
    print(f"  all matmuls of a step ({wp['weight_bytes'] / 1e6:.0f} MB of weights): "
          f"{wp['weights_pass_s'] * 1e3:.0f} ms, {wp['weights_pass_gflops']:.0f} GFLOP/s "
          f"= {100 * wp['weights_pass_gflops'] / single_gf:.0f}% of the single matrix")
    for slots in args.slots:
        cache = decode.init_cache(cfg, n, slots)
        fn = jax.jit(lambda w, c, t, q, v, slots=slots: decode.decode_step(cfg, w, c, t, q, slots - 1, v),
                     donate_argnums=(1,))
        tok, pos = jnp.ones((n,), jnp.int32), jnp.full((n,), slots - 1, jnp.int32)
        vis = jnp.ones((n, slots), bool)
        state = {"c": cache}

        def one():
            lg, state["c"] = fn(w, state["c"], tok, pos, vis)
            lg.block_until_ready()

        one()
        t = best_of(one, 8)
        kv_mb = 2 * cfg.num_layers * n * cfg.num_kv_heads * cfg.head_dim * slots * cache.k[0].dtype.itemsize / 1e6
        print(f"  decode_step at {slots:4d} slots ({kv_mb:4.0f} MB of cache): {t * 1e3:4.0f} ms; "
              f"outside the matmuls: {(t - wp['weights_pass_s']) * 1e3:4.0f} ms "
              f"({100 * (1 - wp['weights_pass_s'] / t):.0f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
