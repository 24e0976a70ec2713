"""Optimizer: AdamW (no weight decay on norms and biases), warmup + cosine/linear decay, clipping.

Gradients arrive already accumulated in fp32 (see `jaxevo.train.step`); the optimizer state has
the params' structure, dtype (fp32 master weights) and sharding.
"""

from __future__ import annotations

import jax
import optax

from jaxevo.errors import ConfigError

NO_DECAY = ("scale", "bias")  # RMSNorm scales and attention biases (leaf names end with these)


def decay_mask(params):
    """True for leaves that get weight decay: everything but norm scales and biases."""
    def keep(path, _):
        name = str(getattr(path[-1], "key", path[-1]))
        return not any(name == s or name.endswith("_" + s) for s in NO_DECAY)
    return jax.tree_util.tree_map_with_path(keep, params)


def make_schedule(lr: float, total_steps: int, *, schedule: str = "cosine", warmup_steps: int = 0,
                  min_lr_ratio: float = 0.0) -> optax.Schedule:
    """Linear warmup to ``lr`` over ``warmup_steps`` (step i of the warmup runs at
    ``lr * (i + 1) / (warmup_steps + 1)``), then cosine/linear decay to ``lr * min_lr_ratio`` at
    ``total_steps`` (or constant).

    The warmup never starts at 0 and never takes the whole phase: the round driver trains phases
    of a handful of steps, and a 1-step phase with a warmup from 0 would not move the model."""
    warmup_steps = max(0, min(int(warmup_steps), int(total_steps) - 1))
    decay_steps = max(1, int(total_steps) - warmup_steps)
    end = lr * min_lr_ratio
    if schedule == "cosine":
        main = optax.cosine_decay_schedule(lr, decay_steps, alpha=min_lr_ratio)
    elif schedule == "linear":
        main = optax.linear_schedule(lr, end, decay_steps)
    elif schedule == "constant":
        main = optax.constant_schedule(lr)
    else:
        raise ConfigError(f"optim.schedule={schedule!r}: choose cosine, linear or constant")
    if not warmup_steps:
        return main
    warm = optax.linear_schedule(lr / (warmup_steps + 1), lr, warmup_steps)
    return optax.join_schedules([warm, main], [warmup_steps])


def make_optimizer(optim, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(tx, schedule) from an `OptimSection`."""
    sched = make_schedule(optim.lr, total_steps, schedule=optim.schedule,
                          warmup_steps=optim.warmup_steps, min_lr_ratio=optim.min_lr_ratio)
    # Clipping is always in the chain (inf = off) so the optimizer-state structure, and with it
    # the checkpoint format, does not depend on the setting.
    parts = [optax.clip_by_global_norm(optim.clip_norm or float("inf"))]
    parts.append(optax.adamw(sched, b1=optim.b1, b2=optim.b2, eps=optim.eps,
                             weight_decay=optim.weight_decay, mask=decay_mask))
    return optax.chain(*parts), sched
