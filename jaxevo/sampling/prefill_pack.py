"""Which tokens a prefill's per-token work runs on: the real tokens of the left-padded prompts,
and a run of tokens that several prompts begin with (a chat template's system prompt, a shared
instruction) once.

A token's keys, values and hidden states depend only on the tokens up to it and their positions
(causal attention; a left-padded row's positions count its real tokens from 0). So where prompts
j and i begin with the same tokens up to slot s, prompt j's token there is prompt i's: the
projections and the MLP run on it once, and the attention, which runs per prompt over the padded
[P, T] layout, reads it for both (`decode.forward`'s ``pack``). How many tokens that leaves out
of chat prompts, and the time it saves: docs/benchmarks.md.
"""

from __future__ import annotations

import numpy as np

from jaxevo.sampling.params import packed_rows


def prefill_pack(tokens: np.ndarray, valid: np.ndarray, parts: int = 4) -> tuple[np.ndarray, np.ndarray] | None:
    """(pack, unpack_at) for the prompts tokens, valid [P, T] (left-padded), or None when running
    the per-token work on fewer rows would not pay (see `packed_rows`).

    pack [R] int32: the flat indices into P x T of the tokens the per-token work runs on, each real
    token whose prompt prefix (itself included) no earlier prompt has, in increasing order, padded
    with P x T up to R = `packed_rows` of their count. unpack_at [P x T] int32: for each slot, the
    entry of pack that holds its token (a repeated prefix's: the first prompt's); 0 for padding
    slots (masked wherever they are read)."""
    p, t = tokens.shape
    first: dict[tuple[int, int], int] = {}  # (prefix node, token) -> node; node = its first flat index
    canon = np.zeros(p * t, np.int64)
    for j in range(p):
        node = -1
        for s in np.flatnonzero(valid[j]):
            flat = j * t + int(s)
            node = first.setdefault((node, int(tokens[j, s])), flat)
            canon[flat] = node
    own = np.asarray(sorted(first.values()), np.int64)
    rows = packed_rows(len(own), p * t, parts)
    if not rows:
        return None
    rank = np.zeros(p * t, np.int64)
    rank[own] = np.arange(len(own))
    unpack_at = np.where(valid.reshape(-1), rank[canon], 0).astype(np.int32)
    pack = np.full(rows, p * t, np.int32)
    pack[:len(own)] = own
    return pack, unpack_at
