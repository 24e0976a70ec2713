"""Random params of tiny models, drawn with numpy, once per process. Flax's init compiled its
layer scan anew for every model (1.5-4 s on 2 cores, in each process and compile mode) and
rounded differently in the two compile modes; numpy's draw compiles nothing and gives the same
values in every process. Each call returns fresh device arrays, so a test that donates them leaves
the next one's intact. No side effects on import (the processes tests start import it too)."""

from __future__ import annotations

import functools

import jax
import numpy as np

from jaxevo.models.config import ModelConfig
from jaxevo.weights.convert import abstract_params


def init_params(cfg: ModelConfig, seed: int = 0):
    """`cfg`'s params as the model's initializers make them (`layer_param_specs`: matrices and
    embeddings N(0, 0.02), norm scales 1 — 0 with Gemma's unit offset —, biases 0), drawn from
    numpy's RandomState(seed) (fresh device arrays)."""
    return _fresh(_host_params(cfg, seed, False))


def random_params(cfg: ModelConfig, seed: int = 0):
    """init_params with N(0, 0.1) added to the norm scales and biases (so their mapping is tested too)."""
    return _fresh(_host_params(cfg, seed, True))


def _fresh(tree):
    return jax.tree.map(lambda x: jax.device_put(np.array(x)), tree)  # a host copy of its own


@functools.lru_cache(maxsize=None)
def _host_params(cfg: ModelConfig, seed: int, jitter: bool):
    """init_params (or random_params: jitter) as numpy arrays, in the params tree's leaf order."""
    rng, jitters = np.random.RandomState(seed), np.random.RandomState([seed, 1])  # same draws in both
    unit = 0.0 if cfg.norm_unit_offset else 1.0

    def draw(path, leaf):
        name = jax.tree_util.keystr(path)
        if "scale" in name or name.endswith("_norm']"):  # q_norm / k_norm are bare scales
            x = np.full(leaf.shape, unit, np.float32)
        elif "bias" in name:
            x = np.zeros(leaf.shape, np.float32)
        else:
            return rng.normal(0, 0.02, leaf.shape).astype(leaf.dtype)
        if jitter and ("scale" in name or "bias" in name):
            x = x + jitters.normal(0, 0.1, leaf.shape)
        return x.astype(leaf.dtype)
    return jax.tree_util.tree_map_with_path(draw, abstract_params(cfg))
