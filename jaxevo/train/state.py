"""`TrainState`: everything a step changes, as one pytree (what a checkpoint saves).

params are the fp32 master weights; the model casts them to its compute dtype at use. ``rng`` is
raw ``uint32[2]`` key data (portable through Orbax), split by the step for anything stochastic.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec as P


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: optimizer updates applied
    params: Any
    opt_state: Any
    rng: jax.Array  # uint32 [2]


def init_state(params, tx: optax.GradientTransformation, seed: int, shardings=None) -> TrainState:
    """A fresh state around ``params`` (optimizer state created in the params' shardings)."""
    rng = jax.random.key_data(jax.random.key(seed)).astype(jnp.uint32)
    make = lambda p, r: TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=tx.init(p), rng=r)
    if shardings is None:
        return jax.jit(make)(params, rng)
    return jax.jit(make, out_shardings=shardings)(params, rng)


def state_shardings(param_shardings, tx: optax.GradientTransformation, abstract_params, mesh):
    """NamedShardings of a `TrainState`: optimizer moments follow their params, the rest replicated."""
    rep = NamedSharding(mesh, P())
    opt_abs = jax.eval_shape(tx.init, abstract_params)
    opt_sh = optax.tree_map_params(
        tx, lambda _, s: s, opt_abs, param_shardings,
        transform_non_params=lambda _: rep,
        is_leaf=lambda x: isinstance(x, NamedSharding))
    return TrainState(step=rep, params=param_shardings, opt_state=opt_sh, rng=rep)


def abstract_state(params_abstract, tx, shardings: TrainState) -> TrainState:
    """ShapeDtypeStructs (with target shardings) of a state: a restore target for any mesh."""
    shapes = jax.eval_shape(lambda p: TrainState(step=jnp.zeros((), jnp.int32), params=p,
                                                 opt_state=tx.init(p), rng=jnp.zeros((2,), jnp.uint32)),
                            params_abstract)
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)
