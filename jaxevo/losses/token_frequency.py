"""DPSE's token-frequency reading of "frequency-aware preference optimisation" (METHODS.md §4.2,
the alternative kept behind a flag [I]): inside Δ, each response token's log-prob is weighted by
ω(y_t) ∝ freq(y_t)^(−α), so frequent tokens (function words, the answer template) count less:

    logp_ω(y | x) = Σ_t ω(y_t) · log π(y_t | x, y_<t)

and the preference loss (``fdpo``/``sigmoid``) is applied to these weighted sums for policy and
reference alike. The pair-frequency variant (``frequency_weights``: one weight per pair from its
topic's frequency) is the other reading. Both are pure functions here; training selects this one
with ``objective.token_alpha`` (ω from `jaxevo.train.token_weights`, applied in
`jaxevo.train.step.forward_views`; docs/interaction_logs.md).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array

__all__ = ["count_tokens", "token_frequency_weights", "weighted_logps"]


def count_tokens(labels: Any, vocab_size: int) -> Array:
    """Occurrences of each token id among the trained positions (``labels >= 0``), f32 [V]."""
    labels = jnp.asarray(labels, jnp.int32).reshape(-1)
    keep = labels >= 0
    return jnp.zeros((vocab_size,), jnp.float32).at[jnp.where(keep, labels, 0)].add(keep.astype(jnp.float32))


def token_frequency_weights(counts: Any, alpha: float) -> Array:
    """ω [V] with ω_v ∝ f_v^(−α) over the tokens that occur, normalised so that the mean weight of
    a token occurrence in the counted data is exactly 1 (Σ_v c_v ω_v = Σ_v c_v); tokens that never
    occur get 1. ``alpha = 0`` gives all ones.

    Args:
      counts: [V] occurrences of each token (e.g. `count_tokens` over every chosen and rejected
        response of the preference set: compute once, never per batch).
      alpha: > 0 down-weights frequent tokens.
    """
    c = jnp.asarray(counts, jnp.float32)
    seen = c > 0
    raw = jnp.where(seen, jnp.where(seen, c, 1.0) ** (-alpha), 0.0)
    scale = jnp.sum(c) / jnp.maximum(jnp.sum(c * raw), 1e-30)
    return jnp.where(seen, raw * scale, 1.0)


def weighted_logps(token_lp: Any, labels: Any, omega: Any) -> Array:
    """Σ_t ω(y_t) log π(y_t) over the trained positions (``labels >= 0``): [B, T] -> [B] f32."""
    labels = jnp.asarray(labels, jnp.int32)
    keep = labels >= 0
    w = jnp.asarray(omega, jnp.float32)[jnp.where(keep, labels, 0)]
    return jnp.sum(jnp.where(keep, w * jnp.asarray(token_lp, jnp.float32), 0.0), axis=-1)
