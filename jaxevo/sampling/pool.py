"""Continuous batching: a row that finishes takes the next waiting prompt while the others decode on.

`sampler.decode` runs a batch until its longest row stops, and a row that stopped early still
costs a row of every matmul until then. In real rounds (answers that stop at an end-of-turn token,
greedy evaluation) only 35–74 % of the row-steps produced a token (`benchmarks/batch_fill.py`).
Here the N rows of the cache are a pool:

    state = empty_state(n, m, s, ...)                         # every row free
    cache, state = start(weights, cache, state, prompts..., dest rows...)   # prefill + first token
    cache, state = run(weights, cache, state, ..., refill_at)  # decode until refill_at rows are free
    ... the host collects the finished rows, `start`s waiting prompts in them, `run`s again ...

Every row keeps its own step counter and writes its own cache slot (per-row writes cost the same
as one shared slot: 202 vs 196 ms per 64-row step at 224 slots, measured on the 2-core CPU). A
row's layout is the one `sampler.decode` gives it — prompt in slots [0, T) left-padded,
generated token i at slot T + i, random stream fold_in(fold_in(key, row_id), i) — so a
completion does not depend on which row of the pool it ran in or when it started. It can depend,
by float rounding only, on T: a pool pads every prompt to its longest, where batch-at-a-time
decoding pads to the longest of each batch (tests: token-identical on the tiny f32 models; the
embedded model in bf16: 189 of 256 samples identical, `benchmarks/continuous.py`).

Measured (docs/benchmarks.md): on the demo's workloads it saved 0–13 % of the decode steps (the
base model runs a third of its rows to max_new_tokens) and spent as much on refill prefills and
prompt padding, so it is off by default (`continuous=False`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxevo.models.config import ModelConfig
from jaxevo.sampling import step
from jaxevo.sampling.processors import Knobs, Mode, choose, token_logprobs
from jaxevo.sampling.sampler import (EOS, LENGTH, NOT_RUN, _constrain_cache, _platform_jit, _rows,
                                     pad_id, prefill_prompts, prompt_presence)
from jaxevo.sampling.step import Cache


class PoolState(NamedTuple):
    """Per-row decoding state of the pool, N rows, M output slots, S cache slots."""

    step: jax.Array  # [N] int32: tokens recorded so far (= the row's length)
    last: jax.Array  # [N] int32: the last recorded token (the next step's input)
    tokens: jax.Array  # [N, M] int32 (pad after the end)
    logprobs: jax.Array  # [N, M] f32 (0 after the end)
    finish: jax.Array  # [N] int32: LENGTH / EOS / NOT_RUN
    done: jax.Array  # [N] bool: finished, or free
    plen: jax.Array  # [N] int32: prompt length
    kv_valid: jax.Array  # [N, S] bool: the prompt's real slots and every generated slot
    keys: jax.Array  # [N, 2] uint32: key data of the rows' PRNG streams (`jax.random.key_data`)
    limit: jax.Array  # [N] int32: max new tokens
    presence: jax.Array | None  # [N, V] bool (repetition penalty only)


@functools.partial(jax.jit, static_argnums=(0, 1, 2), static_argnames=("cfg", "mode"))
def empty_state(n: int, m: int, s: int, *, cfg: ModelConfig, mode: Mode) -> PoolState:
    """A pool of n free rows (M output slots, S cache slots)."""
    pad = pad_id(cfg)
    return PoolState(
        step=jnp.zeros((n,), jnp.int32), last=jnp.full((n,), pad, jnp.int32),
        tokens=jnp.full((n, m), pad, jnp.int32), logprobs=jnp.zeros((n, m), jnp.float32),
        finish=jnp.full((n,), NOT_RUN, jnp.int32), done=jnp.ones((n,), bool),
        plen=jnp.zeros((n,), jnp.int32), kv_valid=jnp.zeros((n, s), bool),
        keys=jax.random.key_data(jax.random.split(jax.random.key(0), n)), limit=jnp.zeros((n,), jnp.int32),
        presence=jnp.zeros((n, cfg.vocab_size), bool) if mode.repetition_penalty else None)


def _record(st: PoolState, tok, lp, stop_ids) -> PoolState:
    """Append each active row's token; rows that hit a stop token or their limit are done."""
    n, m = st.tokens.shape
    ar = jnp.arange(n)
    active = ~st.done
    col = jnp.where(active, st.step, m)  # inactive rows write out of range: dropped
    tokens = st.tokens.at[ar, col].set(tok, mode="drop")
    logprobs = st.logprobs.at[ar, col].set(lp, mode="drop")
    step_ = st.step + active
    is_stop = active & jnp.any(tok[:, None] == stop_ids[None, :], axis=1)
    at_limit = active & ~is_stop & (step_ >= st.limit)
    finish = jnp.where(is_stop, EOS, jnp.where(at_limit, LENGTH, st.finish))
    presence = st.presence
    if presence is not None:
        presence = presence.at[ar, tok].set(presence[ar, tok] | active)
    return st._replace(step=step_, last=jnp.where(active, tok, st.last), tokens=tokens,
                       logprobs=logprobs, finish=finish, done=st.done | is_stop | at_limit,
                       presence=presence)


def _pick(st: PoolState, lg, mode: Mode, knobs: Knobs):
    keys = jax.vmap(jax.random.fold_in)(jax.random.wrap_key_data(st.keys), st.step)
    tok = choose(lg, keys, mode, knobs, st.presence)
    return tok, token_logprobs(lg, tok)


@_platform_jit(static_argnames=("cfg", "mode", "mesh", "chunk"), donate_argnames=("cache", "state"))
def start(weights, cache: Cache, state: PoolState, tokens, valid, dest, row_prompt, row_ids, limit,
          stop_ids, key, knobs: Knobs, *, cfg: ModelConfig, mode: Mode, mesh=None, chunk: int = 256):
    """Start R new rows: prefill the P prompts [P, T] (left-padded), copy prompt row_prompt[j]'s
    cache into pool row dest[j] (dest[j] = N: a padding entry, ignored), and record each new row's
    first token. row_ids [R]: global sample indices (random streams); limit [R]: max new tokens.
    Returns (cache, state)."""
    s = state.kv_valid.shape[1]
    t = tokens.shape[1]
    pc, logits = prefill_prompts(weights, tokens, valid, cfg, mesh, chunk, cache.k[0].dtype)

    def put(c, p, slot_axis):  # rows dest of c [N, ..] <- p[row_prompt] padded to S slots
        rows = jnp.take(p, row_prompt, axis=0)
        widths = [(0, 0)] * rows.ndim
        widths[slot_axis] = (0, s - t)
        return c.at[dest].set(jnp.pad(rows, widths), mode="drop")

    cache = _constrain_cache(Cache(tuple(put(c, p, 3) for c, p in zip(cache.k, pc.k)),
                                   tuple(put(c, p, 2) for c, p in zip(cache.v, pc.v))), cfg, mesh)
    r = dest.shape[0]
    pvalid = jnp.take(valid, row_prompt, axis=0).astype(bool)
    new = PoolState(
        step=jnp.zeros((r,), jnp.int32), last=jnp.zeros((r,), jnp.int32),
        tokens=jnp.full((r, state.tokens.shape[1]), pad_id(cfg), jnp.int32),
        logprobs=jnp.zeros((r, state.logprobs.shape[1]), jnp.float32),
        finish=jnp.full((r,), NOT_RUN, jnp.int32), done=jnp.zeros((r,), bool),
        plen=jnp.sum(pvalid, axis=1, dtype=jnp.int32),
        kv_valid=jnp.concatenate([pvalid, jnp.ones((r, s - t), bool)], axis=1),
        keys=jax.random.key_data(jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, row_ids)), limit=limit,
        presence=prompt_presence(tokens, valid, row_prompt, cfg.vocab_size) if mode.repetition_penalty else None)
    lg = jnp.take(logits, row_prompt, axis=0)
    tok, lp = _pick(new, lg, mode, knobs)
    new = _record(new, tok, lp, stop_ids)
    state = jax.tree.map(lambda a, b: a.at[dest].set(b, mode="drop"), state, new)
    return cache, jax.tree.map(lambda x: _rows(x, mesh), state)


@_platform_jit(static_argnames=("cfg", "mode", "mesh"), donate_argnames=("cache", "state"))
def run(weights, cache: Cache, state: PoolState, stop_ids, knobs: Knobs, refill_at, *,
        cfg: ModelConfig, mode: Mode, mesh=None):
    """Decode every unfinished row until all rows are done, or until at least `refill_at` rows
    (int32 scalar) are done — then the host can start waiting prompts in them. On the device.
    Returns (cache, state, decode steps run)."""
    n, s = state.kv_valid.shape
    t = s - state.tokens.shape[1]
    slots = jnp.arange(s)

    def cond(c):
        free = jnp.sum(c[0].done, dtype=jnp.int32)
        return (free < n) & (free < refill_at)

    def body(c):  # rows already done recompute their last slot and record nothing
        st, cache, i = c
        slot = t + st.step - 1  # the slot of `last`
        visible = st.kv_valid & (slots[None] <= slot[:, None])
        if cfg.sliding_window:
            visible &= (slot[:, None] - slots[None] < cfg.sliding_window)
        lg, cache = step.decode_step(cfg, weights, cache, st.last, st.plen + st.step - 1, slot, visible,
                                     lambda x: _constrain_cache(x, cfg, mesh))
        tok, lp = _pick(st, lg, mode, knobs)
        return _record(st, tok, lp, stop_ids), cache, i + 1

    state, cache, steps = lax.while_loop(cond, body, (state, cache, jnp.int32(0)))
    return cache, state, steps
