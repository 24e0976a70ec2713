"""Losses as pure JAX functions: log-probs, the preference-loss registry, recipe losses.

* :mod:`jaxevo.losses.logprobs` — chunked token log-probs (no full f32 [B, T, V] logits).
* :mod:`jaxevo.losses.preference` — ``PREFERENCE_LOSSES`` registry (each entry a `LossSpec`
  declaring what the loss needs) with TRL's semantics, DPSE's ``fdpo``, TRL-named metrics.
* :mod:`jaxevo.losses.objectives` — EVOLVE, SELF meta-skill, per-sequence NLL.
* :mod:`jaxevo.losses.reward` — a reward model's Bradley–Terry loss (TRL's RewardTrainer).
* :mod:`jaxevo.losses.policy` — online RL: ``policy_loss`` (GRPO, BNPO, Dr. GRPO, DAPO, CISPO; GSPO's
  sequence ratio) and ``group_advantages`` / ``rloo_advantages``, with TRL's semantics.

Add a preference loss from anywhere with ``@jaxevo.losses.register(name, needs_reference=...,
needs_lengths=..., hparams=(...))``; ``objective.loss_type=name`` then trains with it.
"""

from jaxevo.losses.logprobs import naive_token_logprobs, sequence_logps, token_logprobs
from jaxevo.losses.objectives import evolve_loss, self_meta_loss, sequence_nll
from jaxevo.losses.policy import (
    ADVANTAGE_SCALES,
    POLICY_LOSS_TYPES,
    group_advantages,
    policy_loss,
    rloo_advantages,
    soft_overlong_punishment,
)
from jaxevo.losses.preference import (
    METRIC_NAMES,
    PREFERENCE_LOSSES,
    LossSpec,
    finalize_metrics,
    frequency_weights,
    log1mexp,
    preference_loss,
    preference_metrics,
    register,
)
from jaxevo.losses.reward import bradley_terry, bradley_terry_loss

__all__ = [
    "ADVANTAGE_SCALES",
    "bradley_terry",
    "bradley_terry_loss",
    "POLICY_LOSS_TYPES",
    "group_advantages",
    "policy_loss",
    "rloo_advantages",
    "METRIC_NAMES",
    "PREFERENCE_LOSSES",
    "LossSpec",
    "evolve_loss",
    "finalize_metrics",
    "frequency_weights",
    "log1mexp",
    "naive_token_logprobs",
    "preference_loss",
    "preference_metrics",
    "register",
    "self_meta_loss",
    "sequence_logps",
    "sequence_nll",
    "soft_overlong_punishment",
    "token_logprobs",
]
