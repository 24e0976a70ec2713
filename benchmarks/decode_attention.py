"""What attention over the KV cache costs in a 64-row decode step, against reading the same bytes.

    python benchmarks/decode_attention.py [--rows 64] [--slots 32 96 160 224] [--repeats 8]

For the embedded SmolLM2-135M's shapes (30 layers, 3 KV heads of 64, 9 query heads), one jitted
call runs, layer after layer, the sampler's own cache write (`decode.write_slots`, one slot, donated
buffers) and attention (`step.attend`, one query per row), each layer's output feeding the next
layer's query as in a real step. No weight matmuls: this is the part of a decode step that grows
with the cache. Printed per cache length, best of --repeats:

  * the sampler's float32 cache (what runs on CPU), and the same without the write;
  * a bfloat16 cache (half the bytes), with and without the write: the write is where XLA:CPU
    copies whole buffers (see `step.storage_dtype`); without it, what bf16 reads cost;
  * the peer: one `jnp.sum` streaming the float32 cache's bytes, and the ratio attention / peer.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from decode_step import best_of  # noqa: E402
from sampler import MODEL  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--slots", type=int, nargs="+", default=[32, 96, 160, 224])
    p.add_argument("--repeats", type=int, default=8)
    args = p.parse_args()
    import jax
    import jax.numpy as jnp
    from jax import lax

    from jaxevo.models.config import ModelConfig
    from jaxevo.models import decode
    from jaxevo.sampling.cpu_choice import DEFAULT_PATH, PATHS
    from jaxevo.weights.load import load_pretrained

    cfg: ModelConfig = load_pretrained(MODEL, dtype="bfloat16", param_dtype="bfloat16").cfg
    n, h, kh, d, layers = args.rows, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.num_layers
    opts = PATHS[DEFAULT_PATH] if jax.devices()[0].platform == "cpu" else None
    print(f"attention over the KV cache, {n} rows, {layers} layers, {kh} KV heads x {d}, {h} query heads;"
          f" load {os.getloadavg()[0]:.1f}")

    def chain(write: bool):
        def f(ks, vs, q, k, v, slot, visible):
            ks, vs, x = list(ks), list(vs), q
            for i in range(layers):
                if write:
                    ks[i], vs[i] = decode.write_slots(ks[i], vs[i], k + 0.01 * x[:, :, :kh], v, slot)
                x = q + 0.01 * decode.attend_cache(cfg, x, ks[i], vs[i], visible).reshape(q.shape).astype(q.dtype)
            return tuple(ks), tuple(vs), x

        return jax.jit(f, donate_argnums=(0, 1), compiler_options=opts)

    key = jax.random.PRNGKey(0)
    q = jax.random.normal(key, (n, 1, h, d), jnp.float32)
    k = v = jax.random.normal(key, (n, 1, kh, d), jnp.float32)
    total = jax.jit(jnp.sum, compiler_options=opts)
    for s in args.slots:
        visible = jnp.ones((n, 1, s), bool)
        f32_bytes = 2 * layers * n * kh * d * s * 4
        flat = jnp.ones((f32_bytes // 4,), jnp.float32)
        total(flat).block_until_ready()
        peer = best_of(lambda: total(flat).block_until_ready(), args.repeats)
        del flat
        print(f"  {s:4d} slots: streaming read of {f32_bytes / 1e6:4.0f} MB (jnp.sum): {peer * 1e3:6.1f} ms, "
              f"{f32_bytes / peer / 1e9:5.1f} GB/s")
        for dtype, write in (("float32", True), ("float32", False), ("bfloat16", True), ("bfloat16", False)):
            fn = chain(write)
            state = {"k": tuple(jnp.zeros((n, kh, d, s), dtype) for _ in range(layers)),
                     "v": tuple(jnp.zeros((n, kh, s, d), dtype) for _ in range(layers))}

            def one():
                state["k"], state["v"], x = fn(state["k"], state["v"], q, k, v, s - 1, visible)
                x.block_until_ready()

            one()
            t = best_of(one, args.repeats)
            print(f"        {dtype:8s} cache, {'write + attend' if write else 'attend only   '}: {t * 1e3:6.1f} ms"
                  f" = {t / peer:4.2f}x the streaming read")
            del state
    return 0


if __name__ == "__main__":
    sys.exit(main())
