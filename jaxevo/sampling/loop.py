"""The decode loop: rows of a KV cache, started by `start` (prefill + first token) and decoded by
`run` (a `lax.while_loop` on the device), for batch-at-a-time decoding and continuous batching.

    state = empty_state(n, m, s, cfg=cfg, mode=mode)                       # n free rows
    cache, state = start(weights, cache, state, prompts..., dest rows...)  # prefill + first token
    cache, state, steps = run(weights, cache, state, ..., refill_at)       # until refill_at rows are done

Batch at a time: start every row at once, `run` until all are done (`lockstep`: every row is at
the same step, so all write one shared cache slot). Continuous batching: the host collects the
finished rows after each `run`, `start`s waiting prompts in them and runs again.

Layout. Prompts are LEFT-padded to a bucketed length T, so a row's prompt sits in slots [0, T)
and its generated token i at slot T + i, at position len_p + i; the cache has S = T + M slots, M
the bucketed max new tokens. `start` runs the P distinct prompts once (in chunks of <= `chunk`
tokens, so the attention scores stay small) and copies each prompt's cache into its rows: the n
samples of a prompt share one prefill. Buffers are donated through every call.

A growing cache. The cache buffer may hold fewer than S slots (at least T + 1): `run` stops
before a write would fall past it, and the host pads it to more slots with `grow` and runs on.
A decode step reads every slot of the buffer, so in lockstep a cache that grows in a few segments
reads about a fifth fewer slots for 128 new tokens (docs/benchmarks.md); the state keeps all S.
The sampler grows it batch at a time on CPUs (`api.Sampler`).

A narrowing batch. A done row still costs its share of every step. Between two `run`s the host
may keep only the rows still running (`take_rows`, padded with done rows to a bucketed count)
and decode on with the smaller batch (`api.Sampler`: batch at a time, once they fit a quarter).

Determinism. A row's key at step i is fold_in(fold_in(key, row_id), i), with row_id the global
sample index, so a completion depends on the seed, its prompt and its index only — not on the
batch or pool row it ran in, when it started, the bucket sizes or the mesh.

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

from jaxevo.models import decode
from jaxevo.models.config import ModelConfig
from jaxevo.models.decode import Cache
from jaxevo.models.transformer import positions_from_valid, visible_mask
from jaxevo.sampling.placement import constrain_cache, constrain_rows, platform_jit
from jaxevo.sampling.processors import Knobs, Mode, choose, token_logprobs

# finish codes (STOP: the host ended the row: a stop string or an end-of-answer pattern matched)
LENGTH, EOS, NOT_RUN, STOP = 0, 1, 2, 3


class State(NamedTuple):
    """Per-row decoding state, N rows, M output slots, S cache slots."""

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


class Output(NamedTuple):
    """What the host reads back: tokens, logprobs [N, M], lengths, finish [N]."""

    tokens: jax.Array
    logprobs: jax.Array
    lengths: jax.Array
    finish: jax.Array


def output(state: State) -> Output:
    return Output(state.tokens, state.logprobs, state.step, state.finish)


def pad_id(cfg: ModelConfig) -> int:
    """The id written in padding slots: the model's pad id if it is a real token, else 0 (an
    out-of-range id would make the embedding gather return NaN, which leaks through masking)."""
    p = cfg.pad_token_id
    return int(p) if p is not None and 0 <= p < cfg.vocab_size else 0


@functools.partial(jax.jit, static_argnums=(0, 1, 2), static_argnames=("cfg", "mode"))
def empty_state(n: int, m: int, s: int, *, cfg: ModelConfig, mode: Mode) -> State:
    """n free rows (M output slots, S cache slots)."""
    pad = pad_id(cfg)
    return State(
        step=jnp.zeros((n,), jnp.int32), last=jnp.full((n,), pad, jnp.int32),
        tokens=jnp.full((n, m), pad, jnp.int32), logprobs=jnp.zeros((n, m), jnp.float32),
        finish=jnp.full((n,), NOT_RUN, jnp.int32), done=jnp.ones((n,), bool),
        plen=jnp.zeros((n,), jnp.int32), kv_valid=jnp.zeros((n, s), bool),
        keys=jax.random.key_data(jax.random.split(jax.random.key(0), n)), limit=jnp.zeros((n,), jnp.int32),
        presence=jnp.zeros((n, cfg.vocab_size), bool) if mode.repetition_penalty else None)


def _pick_and_record(st: State, lg, stop_ids, mode: Mode, knobs: Knobs) -> State:
    """Choose each row's next token from logits lg [N, V] and append it to the active rows; rows
    that hit a stop token or their limit are done."""
    n, m = st.tokens.shape
    tok = choose(lg, jax.vmap(jax.random.fold_in)(jax.random.wrap_key_data(st.keys), st.step),
                 mode, knobs, st.presence)
    lp = token_logprobs(lg, tok)
    ar = jnp.arange(n)
    active = ~st.done
    col = jnp.where(active, st.step, m)  # inactive rows write out of range: dropped
    step = st.step + active
    is_stop = active & jnp.any(tok[:, None] == stop_ids[None, :], axis=1)
    at_limit = active & ~is_stop & (step >= st.limit)
    presence = st.presence
    if presence is not None:
        presence = presence.at[ar, tok].set(presence[ar, tok] | active)
    return st._replace(step=step, last=jnp.where(active, tok, st.last),
                       tokens=st.tokens.at[ar, col].set(tok, mode="drop"),
                       logprobs=st.logprobs.at[ar, col].set(lp, mode="drop"),
                       finish=jnp.where(is_stop, EOS, jnp.where(at_limit, LENGTH, st.finish)),
                       done=st.done | is_stop | at_limit, presence=presence)


def prefill(weights, tokens, valid, cfg: ModelConfig, mesh, chunk: int, dtype, pack=None):
    """The P left-padded prompts [P, T] through the model, in chunks of <= `chunk` tokens.
    Returns (their own cache, T slots, in `dtype`; logits [P, V] f32 of each next token).
    pack (one chunk): (pack, unpack_at) of `sampling.prefill_pack`: the per-token work runs on
    the real tokens, a shared prefix once, not on the P x T padded ones (`decode.forward`'s
    pack), to the rounding of the products."""
    p, t = tokens.shape
    c = t if t <= chunk else chunk
    assert t % c == 0, (t, c)
    positions = positions_from_valid(valid)
    pc = constrain_cache(decode.init_cache(cfg, p, t, dtype=dtype), cfg, mesh)

    def run_chunk(i, pc, pack=None):
        start = i * c
        tk = lax.dynamic_slice_in_dim(tokens, start, c, axis=1)
        ps = lax.dynamic_slice_in_dim(positions, start, c, axis=1)
        visible = visible_mask(valid, start + jnp.arange(c)[None])  # [P, c, T]
        h, pc = decode.forward(cfg, weights, pc, tk, ps, start, visible, lambda x: constrain_cache(x, cfg, mesh),
                               pack=pack)
        if pack is None:
            return pc, h[:, -1]
        # each prompt's last token (slot T - 1 of a left-padded row) among the packed rows
        last = jnp.take(pack[1], jnp.arange(p) * t + t - 1)
        return pc, jnp.take(h.reshape(-1, h.shape[-1]), last, axis=0)

    if t == c:
        pc, last = run_chunk(0, pc, pack)
    else:
        pc = lax.fori_loop(0, t // c - 1, lambda i, pc: run_chunk(i, pc)[0], pc)
        pc, last = run_chunk(t // c - 1, pc)
    return pc, decode.logits(cfg, weights, last)


@platform_jit(static_argnames=("cfg", "mode", "mesh", "chunk"), donate_argnames=("cache", "state"))
def start(weights, cache: Cache, state: State, tokens, valid, dest, row_prompt, row_ids, limit,
          stop_ids, key, knobs: Knobs, pack=None, *, cfg: ModelConfig, mode: Mode, mesh=None, chunk: int = 256):
    """Start R new rows: prefill the P prompts tokens, valid [P, T] (left-padded), copy prompt
    row_prompt[j]'s cache into row dest[j] (dest[j] = N: a padding entry, ignored), and record each
    new row's first token. row_ids [R]: global sample indices (random streams); limit [R]: max new
    tokens; stop_ids [E] int32 (padded with -1); pack: see `prefill`. Returns (cache, state)."""
    s = state.kv_valid.shape[1]
    t = tokens.shape[1]
    pc, logits = prefill(weights, tokens, valid, cfg, mesh, chunk, cache.k[0].dtype, pack)

    def put(c, p, slot_axis):  # rows dest of c [N, ..] <- p[row_prompt] padded to the buffer's slots
        rows = _pad_slots(jnp.take(p, row_prompt, axis=0), slot_axis, c.shape[slot_axis])
        return c.at[dest].set(rows, mode="drop")

    cache = constrain_cache(Cache(tuple(put(c, p, 3) for c, p in zip(cache.k, pc.k)),
                                  tuple(put(c, p, 2) for c, p in zip(cache.v, pc.v))), cfg, mesh)
    r = dest.shape[0]
    pvalid = jnp.take(valid, row_prompt, axis=0).astype(bool)
    presence = None
    if mode.repetition_penalty:  # which tokens occur in each row's prompt
        ptoks = jnp.take(tokens, row_prompt, axis=0)
        presence = jnp.zeros((r, cfg.vocab_size), jnp.int8).at[jnp.arange(r)[:, None], ptoks].max(
            pvalid.astype(jnp.int8)) > 0
    new = State(
        step=jnp.zeros((r,), jnp.int32), last=jnp.zeros((r,), jnp.int32),
        tokens=jnp.full((r, state.tokens.shape[1]), pad_id(cfg), jnp.int32),
        logprobs=jnp.zeros((r, state.logprobs.shape[1]), jnp.float32),
        finish=jnp.full((r,), NOT_RUN, jnp.int32), done=jnp.zeros((r,), bool),
        plen=jnp.sum(pvalid, axis=1, dtype=jnp.int32),
        kv_valid=jnp.concatenate([pvalid, jnp.ones((r, s - t), bool)], axis=1),
        keys=jax.random.key_data(jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, row_ids)),
        limit=limit, presence=presence)
    new = _pick_and_record(new, jnp.take(logits, row_prompt, axis=0), stop_ids, mode, knobs)
    state = jax.tree.map(lambda a, b: a.at[dest].set(b, mode="drop"), state, new)
    return cache, jax.tree.map(lambda x: constrain_rows(x, mesh), state)


@platform_jit(static_argnames=("cfg", "mode", "mesh", "lockstep", "scores"), donate_argnames=("cache", "state"))
def run(weights, cache: Cache, state: State, stop_ids, knobs: Knobs, refill_at, max_steps, *,
        cfg: ModelConfig, mode: Mode, mesh=None, lockstep: bool = False, scores: str = "dot"):
    """Decode every unfinished row until at least `refill_at` rows (int32 scalar, <= N) are done,
    or for at most `max_steps` steps (int32 scalar: the host looks at the rows that often, for stop
    strings and the progress bar); on the device. lockstep: the rows were started together and
    none is refilled, so the active ones share one cache slot (one write for all rows instead of
    one per row). scores: how the attention scores are formed (`decode.attend_cache`). A cache
    buffer of fewer than S slots (see the module doc) also stops the loop before the step whose
    write would not fit. Returns (cache, state, decode steps run)."""
    n, s = state.kv_valid.shape
    t = s - state.tokens.shape[1]
    room = cache.k[0].shape[-1]  # slots in the buffer (<= s)

    def body(c):  # rows already done recompute a slot and record nothing
        st, cache, i = c
        slot = t + st.step - 1  # the slot of each row's `last`
        visible = visible_mask(st.kv_valid[:, :room], slot[:, None])[:, 0]
        write = t + jnp.max(st.step) - 1 if lockstep else slot
        lg, cache = decode.decode_step(cfg, weights, cache, st.last, st.plen + st.step - 1, write, visible,
                                       lambda x: constrain_cache(x, cfg, mesh), scores)
        return _pick_and_record(st, lg, stop_ids, mode, knobs), cache, i + 1

    def more(c):  # the next step writes slot t + max(step) - 1 (lockstep) or below it
        return ((jnp.sum(c[0].done, dtype=jnp.int32) < jnp.minimum(refill_at, n)) & (c[2] < max_steps)
                & (t + jnp.max(c[0].step) - 1 < room))

    state, cache, steps = lax.while_loop(more, body, (state, cache, jnp.int32(0)))
    return cache, state, steps


@functools.partial(jax.jit, static_argnames=("slots", "cfg", "mesh"))
def grow(cache: Cache, *, slots: int, cfg: ModelConfig, mesh=None) -> Cache:
    """The cache padded with empty slots to `slots` (k [N, K, D, s] and v [N, K, s, D] -> s = slots).
    Not donated: a larger output cannot reuse the buffer; the caller drops the old one."""
    return constrain_cache(Cache(tuple(_pad_slots(x, 3, slots) for x in cache.k),
                                 tuple(_pad_slots(x, 2, slots) for x in cache.v)), cfg, mesh)


@functools.partial(jax.jit, static_argnames=("cfg", "mesh"))
def take_rows(cache: Cache, state: State, rows, *, cfg: ModelConfig, mesh=None) -> tuple[Cache, State]:
    """Rows `rows` [n] int32 of the cache and the state, in that order: a batch narrowed to the
    rows still running (padded with done ones). Not donated: the outputs are smaller; the caller
    drops the old buffers."""
    def take(x):
        return jnp.take(x, rows, axis=0)

    cache = Cache(tuple(map(take, cache.k)), tuple(map(take, cache.v)))
    return constrain_cache(cache, cfg, mesh), jax.tree.map(lambda x: constrain_rows(take(x), mesh), state)


def _pad_slots(x, axis: int, slots: int):
    """x with empty (zero) slots appended on `axis` up to `slots`."""
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, slots - x.shape[axis])
    return jnp.pad(x, widths)


@functools.partial(jax.jit, donate_argnames=("state",))
def stop_rows(state: State, rows) -> State:
    """End the rows where `rows` [N] bool is set (finish code STOP); the others are unchanged."""
    rows = rows & ~state.done
    return state._replace(done=state.done | rows, finish=jnp.where(rows, STOP, state.finish))
