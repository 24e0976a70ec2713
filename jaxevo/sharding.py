"""Mesh and the one table of logical-axis rules.

Every parameter and main activation in `jaxevo.models` names its axes logically (`embed`, `heads`,
`vocab`, `batch`, ...). `RULES` maps those names onto the physical mesh axes `(data, fsdp, tensor)`:
batch over data x fsdp, parameters fully sharded over fsdp (ZeRO-3 style) and split Megatron-style
over tensor. Change the table, not the model, to change the layout.
"""

from __future__ import annotations

import contextlib
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxevo.errors import ConfigError
from jaxevo.models.transformer import Transformer

AXES = ("data", "fsdp", "tensor")

# (logical name, mesh axes). For each logical axis flax takes the first rule whose mesh axes are
# not used yet by another dimension of the same array, so an activation's `act_embed` stays
# replicated while `batch` already occupies fsdp.
RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("act_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_embed", None),
    ("head_dim", None),
    ("layers", None),
    ("length", None),
    ("norm", None),
)


def make_mesh(shape: Sequence[int] = (1, -1, 1), devices=None) -> Mesh:
    """Mesh over (data, fsdp, tensor). One entry may be -1: it takes the remaining devices."""
    devices = list(devices if devices is not None else jax.devices())
    shape = list(shape)
    if len(shape) != 3:
        raise ConfigError(f"mesh shape {shape} must have 3 entries for {AXES}")
    if shape.count(-1) > 1:
        raise ConfigError(f"mesh shape {shape}: at most one axis may be -1")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if len(devices) % known:
            raise ConfigError(f"mesh shape {shape} does not divide {len(devices)} devices")
        shape[shape.index(-1)] = len(devices) // known
    if math.prod(shape) != len(devices):
        raise ConfigError(f"mesh shape {tuple(shape)} needs {math.prod(shape)} devices, "
                          f"{len(devices)} are available")
    # mesh_utils orders devices for the physical topology (ICI rings on TPU).
    try:
        arr = mesh_utils.create_device_mesh(shape, devices)
    except Exception:  # CPU/GPU topologies it does not know: a plain reshape is fine there
        arr = np.asarray(devices).reshape(shape)
    return Mesh(arr, AXES)


@contextlib.contextmanager
def use_mesh(mesh: Mesh):
    """Activate the mesh and the logical rules (needed by `nn.with_logical_constraint`).

    `jax.set_mesh`, not the legacy `with mesh:` context: flax linen's logical constraints read
    `jax.sharding.get_abstract_mesh()`, which only `jax.set_mesh` sets — under `with mesh:` every
    `nn.with_logical_constraint` in the model silently did nothing (tests/models/test_mesh.py
    checks that they now reach the compiled program)."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(RULES):
        yield


def logical_to_spec(axes: Sequence[str | None], shape: Sequence[int] | None = None,
                    mesh: Mesh | None = None) -> P:
    """Logical axis names -> PartitionSpec. With `shape` and `mesh`, a mesh axis that does not
    divide its dimension is dropped (e.g. 9 heads over tensor=2 stay replicated) rather than
    failing: correctness first, the plan command reports the cost."""
    spec = nn.logical_to_mesh_axes(tuple(axes), RULES)
    if shape is None or mesh is None:
        return spec
    out = []
    for dim, ax in zip(shape, spec):
        names = (ax,) if isinstance(ax, str) else tuple(ax or ())
        names = tuple(n for n in names if mesh.shape[n] > 1)
        size = math.prod(mesh.shape[n] for n in names)
        out.append(None if not names or dim % size else (names[0] if len(names) == 1 else names))
    return P(*out)


def param_shardings(cfg, mesh: Mesh):
    """NamedSharding tree for the model's params (from the logical names the model declares)."""
    tok = jnp.zeros((1, 1), jnp.int32)
    boxed = jax.eval_shape(lambda: Transformer(cfg).init(
        jax.random.key(0), tok, tok, jnp.ones((1, 1, 1), bool))["params"])
    return tree_shardings(boxed, mesh)


def tree_shardings(boxed_tree, mesh: Mesh):
    """NamedShardings for a tree of `nn.LogicallyPartitioned` (abstract) values."""
    def one(x):
        if isinstance(x, nn.LogicallyPartitioned):
            return NamedSharding(mesh, logical_to_spec(x.names, x.value.shape, mesh))
        return NamedSharding(mesh, P())
    return jax.tree.map(one, boxed_tree, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())
