"""Losses as pure JAX functions: log-probs, the preference-loss registry, recipe objectives.

* :mod:`jaxevo.losses.logprobs` — chunked token log-probs (no full f32 [B, T, V] logits).
* :mod:`jaxevo.losses.preference` — ``PREFERENCE_LOSSES`` registry with TRL's semantics,
  DPSE's ``fdpo``, TRL-named metrics.
* :mod:`jaxevo.losses.objectives` — SFT, preference+NLL, EVOLVE, SELF meta-skill, ``combine``.
"""

from jaxevo.losses.logprobs import naive_token_logprobs, sequence_logps, token_logprobs
from jaxevo.losses.objectives import (
    combine,
    evolve_loss,
    preference_objective,
    self_meta_loss,
    sequence_nll,
    sft_loss,
)
from jaxevo.losses.preference import (
    METRIC_NAMES,
    PREFERENCE_LOSSES,
    finalize_metrics,
    frequency_weights,
    log1mexp,
    preference_loss,
    preference_metrics,
    register,
)

__all__ = [
    "METRIC_NAMES",
    "PREFERENCE_LOSSES",
    "combine",
    "evolve_loss",
    "finalize_metrics",
    "frequency_weights",
    "log1mexp",
    "naive_token_logprobs",
    "preference_loss",
    "preference_metrics",
    "preference_objective",
    "register",
    "self_meta_loss",
    "sequence_logps",
    "sequence_nll",
    "sft_loss",
    "token_logprobs",
]
