"""The jitted core: prefill, then a `lax.while_loop` decode over a preallocated KV cache.

One call generates for N rows (n samples of P <= N prompts):

    weights = prepare_weights(params, cfg=cfg, matmul_dtype=...)       # once per params
    cache, logits = prefill(weights, cache, tokens, valid, row_prompt, cfg=..., mesh=...)
    cache, out = decode(weights, cache, logits, tokens, valid, rows, stop_ids, key, knobs, cfg=..., mode=...)

Layout. Prompts are LEFT-padded to a bucketed length T (row p has T - len_p invalid slots first),
so one shared slot index serves every row: generated token i of every row sits at slot T + i, at
position len_p + i. The cache (`step.Cache`, per layer) has S = T + M slots, M the bucketed max
new tokens. Prefill runs the P distinct prompts once (in chunks of <= `chunk` tokens, so the
attention scores stay small) and copies each prompt's cache into its n rows — n samples share one
prefill. The cache buffer is donated through both calls and handed back for the next batch.

The forward pass is `step.forward` (the model's arithmetic on a decode-friendly cache layout; see
that module for why it does not call `Transformer.apply`); tests hold it to the model's
teacher-forced log-probs and to transformers' greedy tokens.

The decode loop stays on the device: it stops when every row has finished (stop token or its
length limit) or after M steps; the host sees the result once per batch.

Determinism. Row r's key at step i is fold_in(fold_in(key, row_id[r]), i), with row_id the global
sample index (prompt index * n + sample index), so a completion depends on the seed, its prompt
and its index only — not on the batch it landed in, the bucket sizes or the mesh.

Log-probs are log softmax of the RAW logits (before repetition penalty / temperature / filters) at
the chosen token: the model's own distribution, equal to a teacher-forced forward on the same
tokens, which is what preference training needs as reference log-probs.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxevo.models.config import ModelConfig
from jaxevo.models.transformer import Transformer, cache_mask, positions_from_valid
from jaxevo.sampling import step
from jaxevo.sampling.processors import Knobs, Mode, choose, token_logprobs
from jaxevo.sampling.step import Cache

# finish codes returned by `decode`
LENGTH, EOS, NOT_RUN = 0, 1, 2


class Rows(NamedTuple):
    """Per-row inputs of one decode call, each [N]."""

    prompt: jax.Array  # int32: which of the P prefilled prompts this row continues
    ids: jax.Array  # int32: global sample index (PRNG stream of the row)
    live: jax.Array  # bool: False for bucket padding rows
    limit: jax.Array  # int32: max new tokens of the row (<= M)


class Output(NamedTuple):
    tokens: jax.Array  # [N, M] int32 (pad after the end)
    logprobs: jax.Array  # [N, M] f32 (0 after the end)
    lengths: jax.Array  # [N] int32, stop token included
    finish: jax.Array  # [N] int32: LENGTH / EOS / NOT_RUN


def pad_id(cfg: ModelConfig) -> int:
    """The id written in padding slots: the model's pad id if it is a real token, else 0 (an
    out-of-range id would make the embedding gather return NaN, which leaks through masking)."""
    p = cfg.pad_token_id
    return int(p) if p is not None and 0 <= p < cfg.vocab_size else 0


# XLA:CPU hands dots, reductions and elementwise ops to YNNPACK by default; its small
# elementwise fusions cost more than XLA's own loops in the decode step (measured, best of 6 at
# 64 rows: 173 ms -> 151 ms per step; prefill 4.2 s -> 3.4 s for 64 x 48 tokens).
CPU_COMPILER_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE",
}


class _PlatformJit:
    """`jax.jit` that adds CPU_COMPILER_OPTIONS when the program runs on CPU devices (decided at
    the first call, so importing this module never initialises a backend)."""

    def __init__(self, fn, **jit_kw):
        self.fn, self.jit_kw, self.by_platform = fn, jit_kw, {}
        functools.update_wrapper(self, fn)

    def jitted(self, mesh=None):
        platform = (mesh.devices.flat[0] if mesh is not None else jax.devices()[0]).platform
        if platform not in self.by_platform:
            opts = CPU_COMPILER_OPTIONS if platform == "cpu" else None
            self.by_platform[platform] = jax.jit(self.fn, compiler_options=opts, **self.jit_kw)
        return self.by_platform[platform]

    def __call__(self, *args, mesh=None, **kw):
        return self.jitted(mesh)(*args, mesh=mesh, **kw)

    def lower(self, *args, mesh=None, **kw):
        return self.jitted(mesh).lower(*args, mesh=mesh, **kw)

    def _cache_size(self) -> int:
        return sum(f._cache_size() for f in self.by_platform.values())


def _platform_jit(**jit_kw):
    return lambda fn: _PlatformJit(fn, **jit_kw)


# ------------------------------------------------------------------------------ sharding
K_AXES = ("batch", "kv_heads", "head_dim", "length")  # step.Cache.k[l] [N, K, D, S]
V_AXES = ("batch", "kv_heads", "length", "head_dim")  # step.Cache.v[l] [N, K, S, D]


def cache_shardings(cfg: ModelConfig, mesh, n: int, s: int):
    """(k sharding, v sharding) of one layer's cache: rows over (data, fsdp), KV heads over tensor."""
    from jaxevo.sharding import logical_to_spec

    k, d = cfg.num_kv_heads, cfg.head_dim
    return (NamedSharding(mesh, logical_to_spec(K_AXES, (n, k, d, s), mesh)),
            NamedSharding(mesh, logical_to_spec(V_AXES, (n, k, s, d), mesh)))


def rows_spec(mesh, n: int) -> P:
    """Batch axis over (data, fsdp) when it divides, else replicated."""
    size = mesh.shape["data"] * mesh.shape["fsdp"]
    return P(("data", "fsdp")) if size > 1 and n % size == 0 else P()


def _constrain_cache(cache: Cache, cfg, mesh) -> Cache:
    if mesh is None:
        return cache
    n, _, _, s = cache.k[0].shape
    ks, vs = cache_shardings(cfg, mesh, n, s)
    return Cache(tuple(lax.with_sharding_constraint(x, ks) for x in cache.k),
                 tuple(lax.with_sharding_constraint(x, vs) for x in cache.v))


def _rows(x, mesh):
    if mesh is None:
        return x
    spec = rows_spec(mesh, x.shape[0])
    return lax.with_sharding_constraint(x, NamedSharding(mesh, P(*spec, *([None] * (x.ndim - 1)))))


def new_cache(cfg: ModelConfig, n: int, s: int, mesh=None) -> Cache:
    """A zeroed cache buffer (per layer: k [n, K, D, s], v [n, K, s, D]) in the compute dtype."""
    make = functools.partial(step.init_cache, cfg, n, s)
    if mesh is None:  # committed to the default device, like the arrays decode hands back
        return jax.jit(make, out_shardings=jax.sharding.SingleDeviceSharding(jax.devices()[0]))()
    ks, vs = cache_shardings(cfg, mesh, n, s)
    layers = cfg.num_layers
    return jax.jit(make, out_shardings=Cache((ks,) * layers, (vs,) * layers))()


prepare_weights = jax.jit(step.prepare_weights, static_argnames=("cfg", "matmul_dtype"))


def default_matmul_dtype(cfg: ModelConfig, platform: str) -> str:
    """The compute dtype, except float32 on a CPU without native bf16 dot instructions: there the
    bf16 kernels convert to f32 inside anyway, and XLA's f32 matrix-vector path is the faster one at
    batch 1 (measured on a 2-core AVX-512F Xeon without AVX512_BF16: 41.8 vs 46.7 ms per decode
    step at batch 1, equal at batch 64). Same products either way (see `step.prepare_weights`)."""
    if platform == "cpu" and jnp.dtype(cfg.dtype).itemsize == 2 and not cpu_has_native_bf16():
        return "float32"
    return cfg.dtype


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    """True if the host CPU advertises bf16 dot-product instructions (x86 AVX512_BF16 / AMX-BF16,
    Arm BF16). Read from /proc/cpuinfo; False where that is unavailable."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set()
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags |= set(line.split(":", 1)[1].split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


# ------------------------------------------------------------------------------- prefill
def prefill_prompts(weights, tokens, valid, cfg: ModelConfig, mesh, chunk: int, dtype):
    """The P left-padded prompts [P, T] through the model, in chunks of <= `chunk` tokens.
    Returns (their own cache, T slots, in `dtype`; logits [P, V] f32 of each next token)."""
    p, t = tokens.shape
    c = t if t <= chunk else chunk
    assert t % c == 0, (t, c)
    positions = positions_from_valid(valid)
    pc = _constrain_cache(step.init_cache(cfg, p, t, dtype=dtype), cfg, mesh)
    constrain = lambda x: _constrain_cache(x, cfg, mesh)  # noqa: E731

    def run_chunk(i, pc):
        start = i * c
        tk = lax.dynamic_slice_in_dim(tokens, start, c, axis=1)
        ps = lax.dynamic_slice_in_dim(positions, start, c, axis=1)
        visible = cache_mask(valid, start + jnp.arange(c), cfg.sliding_window)  # [P, c, T]
        h, pc = step.forward(cfg, weights, pc, tk, ps, start, visible, constrain)
        return pc, h[:, -1]

    if t == c:
        pc, last = run_chunk(0, pc)
    else:
        pc = lax.fori_loop(0, t // c - 1, lambda i, pc: run_chunk(i, pc)[0], pc)
        pc, last = run_chunk(t // c - 1, pc)
    return pc, step.logits(cfg, weights, last)


@_platform_jit(static_argnames=("cfg", "mesh", "chunk"), donate_argnames=("cache",))
def prefill(weights, cache: Cache, tokens, valid, row_prompt, *, cfg: ModelConfig, mesh=None,
            chunk: int = 256):
    """Run the P prompts [P, T] (left-padded; valid marks real tokens) and fill slots [0, T) of
    the N rows of the donated `cache` (row r from prompt row_prompt[r]). Prompts longer than
    `chunk` run in chunks of `chunk` tokens (bounded attention memory).

    Returns (cache, logits [N, V] f32 of each row's next token)."""
    pc, logits = prefill_prompts(weights, tokens, valid, cfg, mesh, chunk, cache.k[0].dtype)
    cache = step.copy_rows(cfg, cache, pc, row_prompt)
    return _constrain_cache(cache, cfg, mesh), _rows(jnp.take(logits, row_prompt, axis=0), mesh)


def prompt_presence(tokens, valid, row_prompt, vocab: int):
    """[N, V] bool: which tokens occur in each row's prompt (for the repetition penalty)."""
    ptoks = jnp.take(tokens, row_prompt, axis=0)
    pvalid = jnp.take(valid, row_prompt, axis=0)
    n = row_prompt.shape[0]
    return jnp.zeros((n, vocab), jnp.int8).at[jnp.arange(n)[:, None], ptoks].max(pvalid.astype(jnp.int8)) > 0


# -------------------------------------------------------------------------------- decode
@_platform_jit(static_argnames=("cfg", "mode", "mesh"), donate_argnames=("cache",))
def decode(weights, cache, logits, tokens, valid, rows: Rows, stop_ids, key, knobs: Knobs, *,
           cfg: ModelConfig, mode: Mode, mesh=None):
    """Sample up to M = S - T tokens per row after `prefill`. stop_ids [E] int32 (pad with -1).

    Returns (cache, Output). Everything, the early exit included, runs on the device.
    """
    n = rows.prompt.shape[0]
    t = tokens.shape[1]
    s = cache.k[0].shape[3]
    m = s - t
    pad = jnp.int32(pad_id(cfg))
    plen = jnp.take(jnp.sum(valid, axis=1, dtype=jnp.int32), rows.prompt)
    kv_valid = jnp.concatenate([jnp.take(valid, rows.prompt, axis=0).astype(bool),
                                jnp.ones((n, m), bool)], axis=1)
    kv_valid = _rows(kv_valid, mesh)
    row_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, rows.ids)
    presence = _rows(prompt_presence(tokens, valid, rows.prompt, cfg.vocab_size), mesh) \
        if mode.repetition_penalty else None

    def pick(lg, step, presence):
        keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(row_keys, step)
        tok = choose(lg, keys, mode, knobs, presence)
        return tok, token_logprobs(lg, tok)

    def record(st, tok, lp):
        i, out_t, out_lp, lengths, finish, done, presence = st
        active = ~done
        tok = jnp.where(active, tok, pad)
        out_t = lax.dynamic_update_slice(out_t, tok[:, None], (0, i))
        out_lp = lax.dynamic_update_slice(out_lp, jnp.where(active, lp, 0.0)[:, None], (0, i))
        lengths = lengths + active
        is_stop = active & jnp.any(tok[:, None] == stop_ids[None, :], axis=1)
        at_limit = active & ~is_stop & (lengths >= rows.limit)
        finish = jnp.where(is_stop, EOS, jnp.where(at_limit, LENGTH, finish))
        done = done | is_stop | at_limit
        if presence is not None:
            ar = jnp.arange(n)
            presence = presence.at[ar, tok].set(presence[ar, tok] | active)
        return (i + 1, out_t, out_lp, lengths, finish, done, presence), tok

    st = (jnp.int32(0), _rows(jnp.full((n, m), pad), mesh), _rows(jnp.zeros((n, m), jnp.float32), mesh),
          _rows(jnp.zeros((n,), jnp.int32), mesh), _rows(jnp.full((n,), NOT_RUN, jnp.int32), mesh),
          _rows(~rows.live, mesh), presence)
    tok0, lp0 = pick(logits, 0, presence)
    st, last = record(st, tok0, lp0)

    def cond(carry):
        st, _, _ = carry
        return (st[0] < m) & ~jnp.all(st[5])

    slots = jnp.arange(s)

    def body(carry):
        st, last, cache = carry
        i = st[0]
        slot = t + i - 1  # the slot of `last` (generated token i - 1)
        visible = kv_valid & (slots <= slot)[None]
        if cfg.sliding_window:
            visible &= (slot - slots < cfg.sliding_window)[None]
        lg, cache = step.decode_step(cfg, weights, cache, last, plen + i - 1, slot, visible,
                                     lambda c: _constrain_cache(c, cfg, mesh))
        tok, lp = pick(lg, i, st[6])
        st, last = record(st, tok, lp)
        return st, last, cache

    st, _, cache = lax.while_loop(cond, body, (st, last, cache))
    _, out_t, out_lp, lengths, finish, _, _ = st
    return cache, Output(out_t, out_lp, lengths, finish)


def teacher_forced_logprobs(params, cfg: ModelConfig, prompt_ids, completion_ids):
    """Log-probs of `completion_ids` after `prompt_ids` in one plain forward (no cache, no
    padding) — the reference the sampler's log-probs must equal. f32 numpy [len(completion)]."""
    import numpy as np

    ids = np.asarray([list(prompt_ids) + list(completion_ids)], np.int32)
    width = -(-ids.shape[1] // 32) * 32  # right-pad to a multiple of 32: few compilations
    padded = np.zeros((1, width), np.int32)
    padded[0, :ids.shape[1]] = ids[0]
    valid = np.zeros((1, width), np.int32)
    valid[0, :ids.shape[1]] = 1
    lp = np.asarray(_all_logprobs(params, jnp.asarray(padded), jnp.asarray(valid), cfg=cfg))
    start = len(prompt_ids)
    return lp[0, start - 1:ids.shape[1] - 1][np.arange(len(completion_ids)), ids[0, start:]]


@functools.partial(jax.jit, static_argnames=("cfg",))
def _all_logprobs(params, tokens, valid, *, cfg):
    from jaxevo.models.transformer import causal_mask

    logits, _ = Transformer(cfg).apply({"params": params}, tokens, positions_from_valid(valid),
                                       causal_mask(valid, sliding_window=cfg.sliding_window))
    return jax.nn.log_softmax(logits, axis=-1)
