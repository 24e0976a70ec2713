"""Online policy-gradient losses (GRPO, Dr. GRPO, DAPO, BNPO, CISPO; GSPO's sequence ratio) and
group-relative advantages, with TRL 1.16's exact semantics.

:func:`policy_loss` is ``GRPOTrainer._compute_loss`` of TRL 1.16 without the model call: it takes the
per-token log-probs of the completions, not the logits. :func:`group_advantages` is the advantage
block of ``GRPOTrainer._generate_and_score_completions`` (``sum_then_normalize``) and
:func:`rloo_advantages` the leave-one-out baseline of ``RLOOTrainer``. Golden values produced by
TRL's own code are checked in ``tests/losses/test_policy_golden.py``
(``tests/golden/make_policy_goldens.py``).

Shapes: ``B`` completions (all groups of one batch, group-contiguous: prompt 0's G completions,
then prompt 1's ...), ``T`` completion positions (prompt positions are not passed in).

Subtleties of TRL 1.16 reproduced on purpose:

* ``grpo`` averages each sequence's tokens, then the sequences, *including* fully padded rows
  (they add 0 but count in B).
* ``dr_grpo`` divides the token sum by ``B · max_completion_length`` whatever the real lengths.
* ``dapo`` and ``cispo`` divide by ``num_items_in_batch``: the completion tokens of the whole
  *generation* batch (pass it when a batch is split into micro-batches; default: this batch's).
* The KL term is ``β · k3`` with ``k3 = exp(ref − logp) − (ref − logp) − 1`` and, by default
  (``use_bias_correction_kl=True``, TRL's default), multiplied by the (differentiable) importance
  ratio; it is added to every token's loss before aggregation.
* ``delta`` (two-sided clipping) caps the unclipped ratio, and the clip metrics use the capped ratio.
* Advantages of unscorable completions (NaN reward) are 0; NaN rewards are left out of the means
  and standard deviations (TRL's ``nanmean``/``nanstd``, the std unbiased).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxevo.errors import ConfigError

Array = jax.Array

POLICY_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo")
ADVANTAGE_SCALES = ("group", "batch", "none")
IMPORTANCE_LEVELS = ("token", "sequence")
_CLIPPED_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
_STD_EPS = 1e-4  # TRL: advantages / (std + 1e-4)


def _f32(x: Any) -> Array:
    return jnp.asarray(x, jnp.float32)


def check_policy_options(loss_type: str, importance_sampling_level: str = "token") -> None:
    """Raise a `ConfigError` naming the bad option and the allowed values."""
    if loss_type not in POLICY_LOSS_TYPES:
        raise ConfigError(f"unknown policy loss_type {loss_type!r}; choose one of {', '.join(POLICY_LOSS_TYPES)}")
    if importance_sampling_level not in IMPORTANCE_LEVELS:
        raise ConfigError(
            f"unknown importance_sampling_level {importance_sampling_level!r}; choose 'token' or 'sequence'"
        )


def _global_masked_mean(x: Array, mask: Array) -> Array:
    """TRL's ``global_masked_mean``: [B, 1] values count once per sequence, [B, T] values per token."""
    if x.shape[1] == 1:
        return jnp.sum(x) / max(x.shape[0], 1)
    return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def _masked_seq_mean(x: Array, mask: Array) -> Array:
    """TRL's ``masked_seq_mean`` (no clamp: a fully padded row gives NaN, which nanmin/nanmax skip)."""
    if x.shape[1] == 1:
        return x[:, 0]
    return jnp.sum(x * mask, axis=-1) / jnp.sum(mask, axis=-1)


def policy_loss(
    loss_type: str,
    logps: Array,
    old_logps: Array | None,
    ref_logps: Array | None,
    advantages: Array,
    mask: Array,
    *,
    beta: float = 0.0,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    max_completion_length: int | None = None,
    importance_sampling_level: str = "token",
    delta: float | None = None,
    use_bias_correction_kl: bool = True,
    num_items_in_batch: Array | float | None = None,
    entropies: Array | None = None,
) -> tuple[Array, dict[str, Array]]:
    """The clipped-ratio policy loss of one batch and TRL's metrics.

    Args:
      loss_type: one of :data:`POLICY_LOSS_TYPES`; how the per-token losses are aggregated.
      logps: [B, T] log π_θ of the completion tokens (differentiated).
      old_logps: [B, T] log-probs under the parameters that sampled the batch, or ``None`` for
        ``stop_gradient(logps)`` (one optimiser step per batch, on-policy).
      ref_logps: [B, T] reference log-probs; required when ``beta != 0``, else may be ``None``.
      advantages: [B] one advantage per completion.
      mask: [B, T] 1 on completion tokens, 0 on padding.
      beta: weight of the k3 KL term.
      epsilon_low / epsilon_high: ratio clip range ``[1 − ε_low, 1 + ε_high]``; for ``cispo``,
        ``epsilon_high`` is the cap on the (detached) ratio itself (TRL's ε_max).
      max_completion_length: ``dr_grpo``'s constant normaliser (default T).
      importance_sampling_level: ``"token"`` (one ratio per token) or ``"sequence"`` (GSPO: the
        exp of the mean log-ratio of each sequence).
      delta: optional cap on the unclipped ratio (two-sided clipping).
      use_bias_correction_kl: multiply the KL term by the importance ratio (TRL's default).
      num_items_in_batch: ``dapo``/``cispo`` normaliser; default ``sum(mask)``.
      entropies: optional [B, T] per-token entropies, only for the ``entropy`` metric.

    Returns:
      ``(loss, metrics)``: the scalar f32 loss and a dict of f32 scalars named as TRL logs them
      (``clip_ratio/{low_mean,low_min,high_mean,high_max,region_mean}`` or ``cispo_clip_ratio``,
      ``kl`` when ``beta != 0``, ``entropy`` when ``entropies`` is given).
    """
    check_policy_options(loss_type, importance_sampling_level)
    logps, mask, adv = _f32(logps), _f32(mask), _f32(advantages)
    if adv.ndim == 1:
        adv = adv[:, None]
    old = jax.lax.stop_gradient(logps) if old_logps is None else _f32(old_logps)
    log_ratio = logps - old
    if importance_sampling_level == "token":
        log_w = log_ratio
    else:
        log_w = (jnp.sum(log_ratio * mask, axis=-1) / jnp.maximum(jnp.sum(mask, axis=-1), 1.0))[:, None]
    coef_1 = jnp.exp(log_w)

    if beta != 0.0:
        if ref_logps is None:
            raise ConfigError("policy_loss: beta != 0 needs ref_logps (log-probs of the frozen reference)")
        d = _f32(ref_logps) - logps
        per_token_kl = jnp.exp(d) - d - 1.0
        if use_bias_correction_kl:
            per_token_kl = per_token_kl * coef_1

    if loss_type == "cispo":
        clamped = jax.lax.stop_gradient(jnp.minimum(coef_1, epsilon_high))
        per_token_loss = -clamped * adv * logps
    else:
        coef_2 = jnp.clip(coef_1, 1.0 - epsilon_low, 1.0 + epsilon_high)
        if delta is not None:
            coef_1 = jnp.minimum(coef_1, delta)
        per_token_loss = -jnp.minimum(coef_1 * adv, coef_2 * adv)
    if beta != 0.0:
        per_token_loss = per_token_loss + beta * per_token_kl

    masked = per_token_loss * mask
    if loss_type == "grpo":
        loss = jnp.mean(jnp.sum(masked, axis=-1) / jnp.maximum(jnp.sum(mask, axis=-1), 1.0))
    elif loss_type == "bnpo":
        loss = jnp.sum(masked) / jnp.maximum(jnp.sum(mask), 1.0)
    elif loss_type == "dr_grpo":
        length = logps.shape[1] if max_completion_length is None else max_completion_length
        loss = jnp.sum(masked) / (per_token_loss.shape[0] * length)
    else:  # dapo, cispo
        n = jnp.sum(mask) if num_items_in_batch is None else _f32(num_items_in_batch)
        loss = jnp.sum(masked) / jnp.maximum(n, 1.0)

    metrics: dict[str, Array] = {}
    if beta != 0.0:
        metrics["kl"] = _global_masked_mean(per_token_kl, mask)
    if entropies is not None:
        metrics["entropy"] = _global_masked_mean(_f32(entropies), mask)
    if loss_type in _CLIPPED_TYPES:
        low = ((coef_1 < 1.0 - epsilon_low) & (adv < 0)).astype(jnp.float32)
        high = ((coef_1 > 1.0 + epsilon_high) & (adv > 0)).astype(jnp.float32)
        region = jnp.maximum(low, high)
        metrics["clip_ratio/low_mean"] = _global_masked_mean(low, mask)
        metrics["clip_ratio/high_mean"] = _global_masked_mean(high, mask)
        metrics["clip_ratio/region_mean"] = _global_masked_mean(region, mask)
        metrics["clip_ratio/low_min"] = jnp.nanmin(_masked_seq_mean(low, mask))
        metrics["clip_ratio/high_max"] = jnp.nanmax(_masked_seq_mean(high, mask))
    else:
        metrics["cispo_clip_ratio"] = _global_masked_mean(((coef_1 > epsilon_high) & (adv > 0)).astype(jnp.float32), mask)
    return loss, metrics


def _nanstd(x: Array, axis: int | None = None) -> Array:
    """TRL's ``nanstd``: unbiased, NaN-aware; NaN where fewer than two values are present."""
    mean = jnp.nanmean(x, axis=axis, keepdims=True)
    var = jnp.nanmean((x - mean) ** 2, axis=axis, keepdims=True)
    count = jnp.sum(~jnp.isnan(x), axis=axis, keepdims=True).astype(jnp.float32)
    corr = jnp.where(count > 1, count / jnp.maximum(count - 1, 1.0), jnp.nan)
    std = jnp.sqrt(var * corr)
    return std if axis is None else jnp.squeeze(std, axis)


def _groups(rewards: Any, group_size: int) -> Array:
    r = _f32(rewards)
    if r.ndim != 1 or group_size < 1 or r.shape[0] % group_size:
        raise ConfigError(
            f"advantages: rewards of shape {tuple(r.shape)} do not split into groups of {group_size} "
            "(expected a flat [P·G] vector, each prompt's G completions contiguous)"
        )
    return r.reshape(-1, group_size)


def group_advantages(rewards: Any, group_size: int, scale: str = "group") -> Array:
    """GRPO advantages: ``(r − group mean) / (std + 1e-4)``.

    Args:
      rewards: [P·G] one reward per completion, group-contiguous; NaN marks an unscorable one.
      group_size: G, completions per prompt.
      scale: ``"group"`` (each group's unbiased std), ``"batch"`` (the whole batch's std) or
        ``"none"`` (no division; Dr. GRPO).

    Returns:
      [P·G] f32 advantages, 0 where the reward is NaN.
    """
    if scale not in ADVANTAGE_SCALES:
        raise ConfigError(f"unknown advantage scale {scale!r}; choose one of {', '.join(ADVANTAGE_SCALES)}")
    grouped = _groups(rewards, group_size)
    r = grouped.reshape(-1)
    mean = jnp.repeat(jnp.nanmean(grouped, axis=1), group_size)
    adv = r - mean
    if scale == "group":
        std = jnp.repeat(_nanstd(grouped, axis=1), group_size) if group_size > 1 else jnp.zeros_like(r)
        adv = adv / (std + _STD_EPS)
    elif scale == "batch":
        std = _nanstd(r) if r.shape[0] > 1 else jnp.zeros_like(r)
        adv = adv / (std + _STD_EPS)
    return jnp.nan_to_num(adv, nan=0.0)


def rloo_advantages(rewards: Any, group_size: int, normalize: bool = False) -> Array:
    """RLOO advantages: each reward minus the mean of its group's *other* scorable rewards.

    Args:
      rewards: [P·G] group-contiguous rewards; NaN marks an unscorable completion.
      group_size: G (≥ 2 for a baseline; G = 1 gives zeros, as TRL).
      normalize: then standardise over the batch (TRL's ``normalize_advantages``).

    Returns:
      [P·G] f32 advantages, 0 where the reward is NaN or no sibling is scorable.
    """
    grouped = _groups(rewards, group_size)
    r = grouped.reshape(-1)
    if group_size == 1:
        return jnp.zeros_like(r)
    counts = jnp.sum(~jnp.isnan(grouped), axis=1, keepdims=True).astype(jnp.float32)
    total = jnp.nansum(grouped, axis=1, keepdims=True)
    adv = r - ((total - grouped) / (counts - 1.0)).reshape(-1)
    if normalize:
        adv = (adv - jnp.nanmean(adv)) / (_nanstd(adv) + _STD_EPS)
    return jnp.nan_to_num(adv, nan=0.0)


def soft_overlong_punishment(lengths: Any, max_completion_len: int, soft_punish_cache: int) -> Array:
    """DAPO's soft overlong penalty (TRL's ``get_soft_overlong_punishment``), per completion.

    ``0`` up to ``L_max − L_cache`` tokens, then falling linearly to ``−1`` at ``L_max``, ``−1``
    beyond. Args: ``lengths`` [N] completion token counts; returns [N] f32.
    """
    n = _f32(lengths)
    start = max_completion_len - soft_punish_cache
    ramp = (start - n) / max(soft_punish_cache, 1)
    return jnp.where(n <= start, 0.0, jnp.where(n <= max_completion_len, ramp, -1.0))
