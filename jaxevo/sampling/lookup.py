"""Prompt-lookup speculative decoding: draft tokens copied from the prompt, verified in one forward.

A refinement prompt repeats much of the answer it refines, so the continuation of the current text
is often already in the prompt. Each step, per row, the last `ngram` tokens (then fewer, down to 1)
are looked up in the row's history (prompt + generated, on the device), and the `k` tokens that
followed their latest earlier occurrence become the draft. One forward over [last token, draft]
(k + 1 positions, each row writing its own cache slots) scores them all:

* greedy: the longest draft prefix equal to the model's argmax is accepted, plus the model's own
  next token — output identical to plain greedy decoding;
* sampling (temperature, min-p): draft token d at a position is accepted with probability p(d) under
  the processed distribution p there; on the first rejection the token is drawn from p with d
  removed (renormalised). With a deterministic draft this is exact speculative sampling: each
  token is distributed exactly as in plain sampling (the random draws differ, so the samples do).

Each step yields 1 .. k + 1 tokens per row. Rows advance by different amounts, so each row keeps its
own cache slot (per-row writes); slots of rejected drafts are masked and overwritten next step.
Worth it where a step is memory-bound (batch 1 on CPU, most GPU/TPU decoding); at a compute-bound
batch the k extra positions cost (k + 1)x the matmul work per step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxevo.models.config import ModelConfig
from jaxevo.sampling import step
from jaxevo.sampling.processors import Knobs, Mode, choose, token_logprobs
from jaxevo.sampling.sampler import (EOS, LENGTH, NOT_RUN, Output, Rows, _constrain_cache,
                                     _platform_jit, _rows, pad_id)
from jaxevo.sampling.step import Cache

F32 = jnp.float32
NO_TOKEN = -1  # history entries that can never match (left padding)


def lookup_draft(hist, length, k: int, max_ngram: int = 3):
    """Draft tokens from each row's own history.

    hist [N, H] int32 (NO_TOKEN = not a token), length [N]: entries [0, length) are the history,
    its last entry the current token. For n = max_ngram .. 1, the last n tokens are searched for
    in the history (an occurrence that ends before the last token); the latest match for the
    largest n wins, and the (up to) k tokens after it form the draft.
    Returns (draft [N, k] int32, n_draft [N] int32 in [0, k])."""
    n, h = hist.shape
    idx = jnp.arange(h)
    best_start = jnp.full((n,), -1, jnp.int32)  # index just after the matched n-gram
    for ng in range(max_ngram, 0, -1):
        last = jnp.take_along_axis(hist, jnp.clip(length[:, None] - ng + jnp.arange(ng), 0, h - 1), axis=1)
        match = jnp.ones((n, h), bool)
        for j in range(ng):
            shifted = jnp.roll(hist, -j, axis=1)  # shifted[:, i] = hist[:, i + j]
            match &= shifted == last[:, j:j + 1]
        # an occurrence starting at i ends at i + ng - 1 < length - 1 (strictly before the suffix),
        # and is fully inside the history
        ok = match & (idx[None, :] + ng < length[:, None]) & (length[:, None] > ng)
        start = jnp.max(jnp.where(ok, idx[None, :] + ng, -1), axis=1)
        best_start = jnp.where(best_start >= 0, best_start, start.astype(jnp.int32))
    pos = jnp.clip(best_start[:, None] + jnp.arange(k), 0, h - 1)
    draft = jnp.take_along_axis(hist, pos, axis=1)
    n_draft = jnp.where(best_start >= 0, jnp.clip(length - best_start, 0, k), 0).astype(jnp.int32)
    draft = jnp.where(jnp.arange(k)[None] < n_draft[:, None], draft, 0)
    return draft.astype(jnp.int32), n_draft


def supported(mode: Mode) -> bool:
    """Modes whose processed distribution is cheap to evaluate at a given token."""
    return not (mode.top_k or mode.top_p or mode.repetition_penalty)


def _processed_probs_at(lg, tok, mode: Mode, knobs: Knobs):
    """p(tok) under temperature (+ min-p) of logits lg [M, V]; tok [M]."""
    x = lg / knobs.temperature
    e = jnp.exp(x - jnp.max(x, axis=-1, keepdims=True))
    if mode.min_p:
        e = jnp.where(e >= knobs.min_p, e, 0.0)
    return jnp.take_along_axis(e, tok[:, None], axis=1)[:, 0] / jnp.sum(e, axis=-1)


@_platform_jit(static_argnames=("cfg", "mode", "mesh", "k", "ngram"), donate_argnames=("cache",))
def decode_lookup(weights, cache: Cache, logits, tokens, valid, rows: Rows, stop_ids, key,
                  knobs: Knobs, *, cfg: ModelConfig, mode: Mode, mesh=None, k: int = 4, ngram: int = 3):
    """Like `sampler.decode`, with up to k prompt-lookup draft tokens verified per step.
    The cache has S = T + M + k + 1 slots (M: the output buffer length)."""
    assert supported(mode), mode
    n, t = rows.prompt.shape[0], tokens.shape[1]
    s = cache.k[0].shape[3]
    m = s - t - (k + 1)
    w = k + 1  # positions per step
    pad = jnp.int32(pad_id(cfg))
    ar = jnp.arange(n)
    plen = jnp.take(jnp.sum(valid, axis=1, dtype=jnp.int32), rows.prompt)
    pvalid = jnp.take(valid, rows.prompt, axis=0).astype(bool)
    kv_valid = _rows(jnp.concatenate([pvalid, jnp.ones((n, s - t), bool)], axis=1), mesh)
    hist = jnp.concatenate([jnp.where(pvalid, jnp.take(tokens, rows.prompt, axis=0), NO_TOKEN),
                            jnp.full((n, s - t), NO_TOKEN, jnp.int32)], axis=1)
    row_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, rows.ids)
    slots = jnp.arange(s)
    is_stop = lambda x: jnp.any(x[..., None] == stop_ids, axis=-1)  # noqa: E731

    def keys_at(i, j):
        return jax.vmap(lambda rk: jax.random.fold_in(jax.random.fold_in(rk, i), j))(row_keys)

    def put(buf, vals, off):  # per-row write of vals [N, w] at column off [N]
        return jax.vmap(lambda b, v, o: lax.dynamic_update_slice(b, v, (o,)))(buf, vals, off)

    # First token: from the prefill logits, as in plain decoding.
    tok0 = choose(logits, keys_at(0, 0), mode, knobs)
    lp0 = token_logprobs(logits, tok0)
    live = rows.live
    out_t = jnp.full((n, m + w), pad).at[:, 0].set(jnp.where(live, tok0, pad))
    out_lp = jnp.zeros((n, m + w), F32).at[:, 0].set(jnp.where(live, lp0, 0.0))
    g = live.astype(jnp.int32)
    stop0 = live & is_stop(tok0)
    lim0 = live & ~stop0 & (g >= rows.limit)
    finish = jnp.where(stop0, EOS, jnp.where(lim0, LENGTH, NOT_RUN))
    done = ~live | stop0 | lim0
    hist = hist.at[:, t].set(tok0)
    st = (jnp.int32(1), g, out_t, out_lp, finish, done, hist, tok0, jnp.int32(0))

    def cond(c):
        st, _ = c
        return (st[0] <= m) & ~jnp.all(st[5])

    def body(c):
        (i, g, out_t, out_lp, finish, done, hist, last, drafted), cache = c
        draft, nd = lookup_draft(hist, t + g, k, ngram)
        nd = jnp.where(done, 0, nd)
        inp = jnp.concatenate([last[:, None], draft], axis=1)  # [N, w]
        slot0 = t + g - 1
        pos = (plen + g - 1)[:, None] + jnp.arange(w)
        qslot = slot0[:, None] + jnp.arange(w)
        visible = kv_valid[:, None, :] & (slots[None, None, :] <= qslot[:, :, None])
        if cfg.sliding_window:
            visible &= (qslot[:, :, None] - slots[None, None, :] < cfg.sliding_window)
        h, cache = step.forward(cfg, weights, cache, inp, pos, slot0, visible,
                                lambda x: _constrain_cache(x, cfg, mesh))
        lg = step.logits(cfg, weights, h)  # [N, w, V]
        flat = lg.reshape(n * w, -1)
        dflat = jnp.concatenate([draft, jnp.zeros((n, 1), jnp.int32)], axis=1).reshape(-1)
        in_draft = (jnp.arange(w)[None, :] < nd[:, None])  # position j has a draft token to verify
        if mode.greedy:
            pred = choose(flat, None, mode, knobs).reshape(n, w)
            ok = in_draft & (pred == jnp.concatenate([draft, jnp.zeros((n, 1), jnp.int32)], axis=1))
            a = jnp.sum(jnp.cumprod(ok, axis=1), axis=1)  # accepted drafts
            bonus = jnp.take_along_axis(pred, a[:, None], axis=1)[:, 0]
        else:
            ks = jax.vmap(lambda j: keys_at(i, 1 + j))(jnp.arange(w))  # [w, N]
            ks = jnp.swapaxes(ks, 0, 1).reshape(n * w)
            u = jax.vmap(lambda kk: jax.random.uniform(jax.random.fold_in(kk, 7), (), F32))(ks).reshape(n, w)
            p_d = _processed_probs_at(flat, dflat, mode, knobs).reshape(n, w)
            ok = in_draft & (u < p_d)
            a = jnp.sum(jnp.cumprod(ok, axis=1), axis=1)
            # the token at position a: from p with the rejected draft removed, or plain p after
            # the last draft
            excl = jnp.where(in_draft.reshape(-1), dflat, -1)
            masked = jnp.where(jnp.arange(flat.shape[1])[None, :] == excl[:, None], -jnp.inf, flat)
            alt = choose(masked, ks, mode, knobs).reshape(n, w)
            bonus = jnp.take_along_axis(alt, a[:, None], axis=1)[:, 0]
        j = jnp.arange(w)[None, :]
        new = jnp.where(j < a[:, None], jnp.concatenate([draft, jnp.zeros((n, 1), jnp.int32)], axis=1),
                        bonus[:, None])
        cnt = a + 1
        stops = is_stop(new) & (j < cnt[:, None])
        first_stop = jnp.where(jnp.any(stops, axis=1), jnp.argmax(stops, axis=1), w)
        cnt = jnp.minimum(cnt, first_stop + 1)
        cnt = jnp.minimum(cnt, rows.limit - g)
        cnt = jnp.where(done, 0, cnt)
        keep = j < cnt[:, None]
        lp = jax.vmap(token_logprobs, in_axes=(1, 1), out_axes=1)(lg, new)
        out_t = put(out_t, jnp.where(keep, new, pad), g)
        out_lp = put(out_lp, jnp.where(keep, lp, 0.0), g)
        hist = put(hist, jnp.where(keep, new, NO_TOKEN), t + g)
        stopped = ~done & (first_stop < cnt)
        g = g + cnt
        at_limit = ~done & ~stopped & (g >= rows.limit)
        finish = jnp.where(stopped, EOS, jnp.where(at_limit, LENGTH, finish))
        last = jnp.where(cnt > 0, jnp.take_along_axis(new, jnp.maximum(cnt - 1, 0)[:, None], axis=1)[:, 0], last)
        drafted = drafted + jnp.sum(jnp.where(done, 0, a))
        done = done | stopped | at_limit
        return (i + 1, g, out_t, out_lp, finish, done, hist, last, drafted), cache

    st, cache = lax.while_loop(cond, body, (st, cache))
    i, g, out_t, out_lp, finish, _, _, _, drafted = st
    return cache, Output(out_t[:, :m], out_lp[:, :m], g, finish), {"steps": i - 1, "accepted": drafted}
