"""Where the sampler's programs and buffers live: their CPU compiler options (the dot path that
`cpu_choice` picks per machine), and the shardings of the KV cache and of per-row arrays on a mesh.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxevo.models.config import ModelConfig
from jaxevo.models.decode import Cache, init_cache
from jaxevo.sampling.cpu_choice import DEFAULT_PATH, PATHS
from jaxevo.sharding import logical_to_spec


class PlatformJit:
    """`jax.jit` that adds the CPU dot path's compiler options (`cpu_choice.PATHS`, chosen per
    machine by the sampler and passed as `cpu_path=`) when the program runs on CPU devices (decided
    at the first call, so importing a module never initialises a backend)."""

    def __init__(self, fn, **jit_kw):
        self.fn, self.jit_kw, self.by_platform = fn, jit_kw, {}
        functools.update_wrapper(self, fn)

    def jitted(self, mesh=None, cpu_path: str = DEFAULT_PATH):
        platform = (mesh.devices.flat[0] if mesh is not None else jax.devices()[0]).platform
        key = (platform, cpu_path if platform == "cpu" else None)
        if key not in self.by_platform:
            opts = PATHS[cpu_path] if platform == "cpu" else None
            self.by_platform[key] = jax.jit(self.fn, compiler_options=opts, **self.jit_kw)
        return self.by_platform[key]

    def __call__(self, *args, mesh=None, cpu_path: str = DEFAULT_PATH, **kw):
        return self.jitted(mesh, cpu_path)(*args, mesh=mesh, **kw)

    def lower(self, *args, mesh=None, cpu_path: str = DEFAULT_PATH, **kw):
        return self.jitted(mesh, cpu_path).lower(*args, mesh=mesh, **kw)

    def _cache_size(self) -> int:
        return sum(f._cache_size() for f in self.by_platform.values())


def platform_jit(**jit_kw):
    return lambda fn: PlatformJit(fn, **jit_kw)


# ------------------------------------------------------------------------------ sharding
K_AXES = ("batch", "kv_heads", "head_dim", "length")  # Cache.k[l] [N, K, D, S]
V_AXES = ("batch", "kv_heads", "length", "head_dim")  # Cache.v[l] [N, K, S, D]


def cache_shardings(cfg: ModelConfig, mesh, n: int, s: int):
    """(k sharding, v sharding) of one layer's cache: rows over (data, fsdp), KV heads over tensor."""
    k, d = cfg.num_kv_heads, cfg.head_dim
    return (NamedSharding(mesh, logical_to_spec(K_AXES, (n, k, d, s), mesh)),
            NamedSharding(mesh, logical_to_spec(V_AXES, (n, k, s, d), mesh)))


def rows_spec(mesh, n: int) -> P:
    """Batch axis over (data, fsdp) when it divides, else replicated."""
    size = mesh.shape["data"] * mesh.shape["fsdp"]
    return P(("data", "fsdp")) if size > 1 and n % size == 0 else P()


def rows_sharding(mesh, shape) -> NamedSharding:
    """The sharding of a per-row array of `shape` (rows first)."""
    return NamedSharding(mesh, P(*rows_spec(mesh, shape[0]), *([None] * (len(shape) - 1))))


def constrain_cache(cache: Cache, cfg: ModelConfig, mesh) -> Cache:
    if mesh is None:
        return cache
    n, _, _, s = cache.k[0].shape
    ks, vs = cache_shardings(cfg, mesh, n, s)
    return Cache(tuple(lax.with_sharding_constraint(x, ks) for x in cache.k),
                 tuple(lax.with_sharding_constraint(x, vs) for x in cache.v))


def constrain_rows(x, mesh):
    return x if mesh is None else lax.with_sharding_constraint(x, rows_sharding(mesh, x.shape))


def new_cache(cfg: ModelConfig, n: int, s: int, mesh=None) -> Cache:
    """A zeroed cache buffer (per layer: k [n, K, D, s], v [n, K, s, D]), in `storage_dtype`."""
    make = functools.partial(init_cache, cfg, n, s)
    if mesh is None:  # committed to the default device, like the arrays the loop hands back
        return jax.jit(make, out_shardings=jax.sharding.SingleDeviceSharding(jax.devices()[0]))()
    ks, vs = cache_shardings(cfg, mesh, n, s)
    return jax.jit(make, out_shardings=Cache((ks,) * cfg.num_layers, (vs,) * cfg.num_layers))()
