"""ω for ``objective.token_alpha`` (DPSE's token-frequency reading, jaxevo/losses/token_frequency.py):
counted once over the trained positions of every view of the whole training set (chosen and
rejected responses), never per batch, so batching and micro-batching cannot change it. The step
and the reference pass receive it as one replicated [V] f32 array (an argument, not a constant
compiled into the program).
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxevo.losses.token_frequency import token_frequency_weights
from jaxevo.train.batches import TokenizedData


def data_token_counts(data: TokenizedData, views: Sequence[str], vocab_size: int) -> np.ndarray:
    """[V] int64: occurrences of each token id among the trained positions (``labels >= 0``) of
    ``views`` over every example of ``data``."""
    counts = np.zeros((vocab_size,), np.int64)
    for v in views:
        lab = np.asarray(data.arrays[f"{v}/labels"]).reshape(-1)
        counts += np.bincount(lab[lab >= 0], minlength=vocab_size)[:vocab_size]
    return counts


def data_token_weights(data: TokenizedData, views: Sequence[str], vocab_size: int,
                       alpha: float) -> np.ndarray:
    """ω [V] f32 (`token_frequency_weights` of `data_token_counts`): mean 1 per counted token."""
    return np.asarray(token_frequency_weights(data_token_counts(data, views, vocab_size), alpha),
                      np.float32)


def replicated(omega: np.ndarray, mesh) -> jax.Array:
    """The same host array on every process -> one global array replicated over ``mesh``."""
    omega = np.asarray(omega, np.float32)
    return jax.make_array_from_callback(omega.shape, NamedSharding(mesh, P()),
                                        lambda idx: omega[idx])
