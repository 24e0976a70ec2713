"""Random params of tiny models, made once per process: Flax's unjitted init compiles its layer
scan anew on every call (about a second on 2 cores), and a hundred tests ask for the same few
models. Each call returns fresh device arrays, so a test that donates them leaves the next one's
intact. No side effects on import (the processes tests start import it too)."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxevo.models.config import ModelConfig
from jaxevo.models.transformer import Transformer


def init_params(cfg: ModelConfig, seed: int = 0):
    """Flax's initial params of `cfg`'s Transformer from key `seed` (fresh device arrays)."""
    return _fresh(_host_params(cfg, seed, jax.config.values["jax_disable_most_optimizations"], False))


def random_params(cfg: ModelConfig, seed: int = 0):
    """Random params with non-trivial norms and biases (so their mapping is tested too)."""
    return _fresh(_host_params(cfg, seed, jax.config.values["jax_disable_most_optimizations"], True))


def _fresh(tree):
    return jax.tree.map(lambda x: jax.device_put(np.array(x)), tree)  # a host copy of its own


@functools.lru_cache(maxsize=None)
def _host_params(cfg: ModelConfig, seed: int, fast_compile: bool, jitter_norms: bool):
    """init_params (or random_params: jitter_norms) as numpy arrays, once per process and
    compile mode (fast_compile only keys the cache: the modes' eager ops may round differently)."""
    tok = jnp.zeros((1, 1), jnp.int32)
    params = nn.meta.unbox(Transformer(cfg).init(jax.random.key(seed), tok, tok, jnp.ones((1, 1, 1), bool))["params"])
    rng = np.random.RandomState(seed)

    def jitter(path, x):
        name = jax.tree_util.keystr(path)
        if jitter_norms and ("scale" in name or "bias" in name):
            x = x + jnp.asarray(rng.normal(0, 0.1, x.shape), x.dtype)
        return np.asarray(x)
    return jax.tree_util.tree_map_with_path(jitter, params)
