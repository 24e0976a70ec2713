"""FLOPs of a train step and the matmul peak they are measured against (train_step.py, mfu.py)."""

from __future__ import annotations

import time


def train_flops(cfg, sequences: int, length: int) -> float:
    """Model FLOPs of one forward + backward over ``sequences`` rows of ``length`` tokens.

    6 · matmul params · tokens (the embedding lookup is free, the LM head is a matmul, tied or
    not) + 3 · attention FLOPs (2 · 2 · T² · heads · head_dim per layer and row for QKᵀ and PV,
    counted over the full T², as most MFU tables do). Remat's recomputation is not counted.
    """
    e, v = cfg.hidden_size, cfg.vocab_size
    matmul_params = cfg.num_params() - v * e + (e * v if cfg.tie_word_embeddings else 0)
    tokens = sequences * length
    attn = 2 * 2 * length * length * cfg.num_heads * cfg.head_dim * cfg.num_layers * sequences
    return 6 * matmul_params * tokens + 3 * attn


def matmul_peak_jax(dtype: str, shapes, seconds: float = 1.5) -> dict:
    """Best FLOP/s of XLA's dot on each ``(m, k, n)`` (``dtype`` inputs, f32 accumulation)."""
    import jax
    import jax.numpy as jnp

    best = {}
    for m, k, n in shapes:
        a = jnp.ones((m, k), dtype) * 0.01
        b = jnp.ones((k, n), dtype) * 0.01
        f = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
        f(a, b).block_until_ready()
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            f(a, b).block_until_ready()
            reps += 1
        best[f"{m}x{k}x{n}"] = 2 * m * k * n * reps / (time.perf_counter() - t0)
    return best
