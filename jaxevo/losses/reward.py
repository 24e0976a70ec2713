"""Bradley–Terry loss of a reward model, as TRL's RewardTrainer computes it.

    per_pair = bradley_terry(r_chosen, r_rejected, margin)                 # [B]
    loss, metrics = bradley_terry_loss(r_chosen, r_rejected, margin, center_coef)

per pair: -log sigmoid(r_chosen - r_rejected - margin); the loss is their mean, plus
``center_coef * mean((r_chosen + r_rejected)^2)`` (TRL's ``center_rewards_coefficient``, which
keeps rewards near zero). Metrics keep TRL's names: loss, accuracy (share of pairs with
r_chosen > r_rejected), margin (mean r_chosen - r_rejected), min/mean/max_reward (over both).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

METRICS = ("loss", "accuracy", "margin", "min_reward", "mean_reward", "max_reward")


def bradley_terry(r_chosen: Array, r_rejected: Array, margin: Array | None = None) -> Array:
    """r_chosen, r_rejected (, margin) [B] -> per-pair loss [B] f32."""
    diff = (r_chosen - r_rejected).astype(jnp.float32)
    return -jax.nn.log_sigmoid(diff - (0.0 if margin is None else margin))


def center_penalty(r_chosen: Array, r_rejected: Array) -> Array:
    """(r_chosen + r_rejected)^2 per pair [B] f32: TRL's centring term before its coefficient."""
    return jnp.square((r_chosen + r_rejected).astype(jnp.float32))


def bradley_terry_loss(r_chosen: Array, r_rejected: Array, margin: Array | None = None,
                       center_coef: float | None = None) -> tuple[Array, dict[str, Array]]:
    """r_chosen, r_rejected (, margin) [B] -> (loss, TRL's metrics), as RewardTrainer.compute_loss."""
    loss = jnp.mean(bradley_terry(r_chosen, r_rejected, margin))
    if center_coef:
        loss = loss + center_coef * jnp.mean(center_penalty(r_chosen, r_rejected))
    diff = r_chosen - r_rejected
    both = jnp.concatenate([r_chosen, r_rejected])
    return loss, {"loss": loss, "accuracy": jnp.mean((diff > 0).astype(jnp.float32)),
                  "margin": jnp.mean(diff), "min_reward": jnp.min(both),
                  "mean_reward": jnp.mean(both), "max_reward": jnp.max(both)}
