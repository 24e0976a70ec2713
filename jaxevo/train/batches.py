"""From JSONL records to padded token arrays, and from those to fixed-shape batches.

Every example is turned into one or more *views* (the objective says which; e.g. DPO has
``chosen`` and ``rejected``, each ``context ⊕ response``). A view is stored left-aligned as

    tokens    [N, T] int32   context ⊕ response, then padding (0)
    labels    [N, T] int32   labels[t] = tokens[t+1] where that token is trained (response), else -1
    segments  [N, T] int32   1.. for real tokens (one id per packed example), 0 for padding
    positions [N, T] int32   RoPE positions (restart at 0 in every packed segment)

so `hidden[:, t]` predicts `labels[:, t]`, the loss mask is `labels >= 0`, and the attention mask
is `causal_mask(segments > 0, segments)`. Per-example scalars (reference log-probs
``ref/<view>``, fDPO ``weight`` / ``margin``) live beside them in the same flat dict.

`BatchStream` draws fixed-size batches from a shuffled, epoch-by-epoch, *infinite* order that is
a pure function of (seed, step): no partial batches (so micro-batches are always full and the data
position of a checkpoint is just the step), and each batch is cut to the shortest multiple of
`pad_to_multiple` that holds its longest row (bucketing: few distinct shapes, little padding).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import flax.struct
import numpy as np

from jaxevo.data.loaders import read_jsonl_rows
from jaxevo.data.records import last_user_text
from jaxevo.errors import ConfigError
from jaxevo.tokenizer import chat_prompt

log = logging.getLogger(__name__)

VIEW_KEYS = ("tokens", "labels", "segments", "positions")


@flax.struct.dataclass
class Batch:
    """One global batch. ``views[name]`` holds the four [B, T] arrays of that view; ``extras``
    holds per-example [B] arrays (``ref/<view>`` reference log-prob sums, ``weight``, ``margin``)."""

    views: dict[str, dict[str, Any]]
    extras: dict[str, Any]

    @property
    def size(self) -> int:
        return next(iter(self.views.values()))["tokens"].shape[0]

    @property
    def length(self) -> int:
        return next(iter(self.views.values()))["tokens"].shape[1]


@dataclasses.dataclass(frozen=True)
class TokenizedData:
    """Padded arrays of a whole data set (see the module doc); ``arrays`` keys are
    ``"<view>/<tokens|labels|segments|positions>"`` and the extras' names."""

    arrays: dict[str, np.ndarray]
    views: tuple[str, ...]
    stats: dict[str, int]

    @property
    def num_examples(self) -> int:
        return next(iter(self.arrays.values())).shape[0]

    @property
    def length(self) -> int:
        return self.arrays[f"{self.views[0]}/tokens"].shape[1]

    def with_extras(self, **extras: np.ndarray) -> "TokenizedData":
        arrays = dict(self.arrays)
        for k, v in extras.items():
            v = np.asarray(v)
            if v.shape[0] != self.num_examples:
                raise ValueError(f"extra {k!r} has {v.shape[0]} rows, data has {self.num_examples}")
            arrays[k] = v
        return dataclasses.replace(self, arrays=arrays)

    def take(self, idx: Sequence[int] | np.ndarray, pad_to_multiple: int = 1) -> Batch:
        """The examples ``idx`` as a `Batch`, cut to the bucketed length of its longest row."""
        idx = np.asarray(idx)
        t = self.length
        used = 1
        for v in self.views:
            seg = self.arrays[f"{v}/segments"][idx]
            if seg.size:
                nz = np.nonzero(seg.any(axis=0))[0]
                used = max(used, int(nz[-1]) + 1 if nz.size else 1)
        m = max(1, int(pad_to_multiple))
        tb = min(t, -(-used // m) * m)
        views = {v: {k: self.arrays[f"{v}/{k}"][idx, :tb] for k in VIEW_KEYS} for v in self.views}
        extras = {k: a[idx] for k, a in self.arrays.items() if "/" not in k or k.startswith("ref/")}
        return Batch(views=views, extras=extras)


# ----------------------------------------------------------------------------- reading


def read_records(path: str | Path, required: Sequence[str], limit: int | None = None,
                 prompt_field: str = "prompt") -> list[dict[str, Any]]:
    """Read a JSONL file; every record must have the ``required`` string fields.

    ``prompt_field`` names the field read as ``"prompt"``. Errors name the file, line and field.
    """
    p = Path(path).expanduser()
    if not str(path):
        raise ConfigError("data.path is empty: give a JSONL file of training examples")
    if not p.is_file():
        raise ConfigError(f"data file not found: {p}")
    out: list[dict[str, Any]] = []
    for lineno, row in read_jsonl_rows(p):
        if prompt_field != "prompt" and prompt_field in row:
            row = {**row, "prompt": row[prompt_field]}
        if "prompt" not in row and "messages" in row:  # a chat record: the messages are the context
            row = {**row, "prompt": last_user_text(row["messages"], f"{p} line {lineno}")}
        missing = [k for k in required if not isinstance(row.get(k), str)]
        if missing:
            raise ConfigError(
                f"{p} line {lineno}: missing or non-string field(s) {missing}; this objective "
                f"needs {list(required)} (the record has {sorted(row)})")
        out.append(row)
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise ConfigError(f"{p}: no records")
    return out


# ----------------------------------------------------------------------------- tokenising


def _encode_many(tok, texts: list[str]) -> list[list[int]]:
    if not texts:
        return []
    if callable(tok):  # transformers tokenizers: one batched (Rust) call
        return [list(x) for x in tok(texts, add_special_tokens=False)["input_ids"]]
    return [list(tok.encode(t, add_special_tokens=False)) for t in texts]


def format_context(tok, text, chat_template: bool, system: str | None) -> str:
    """The model-facing prompt text: chat-templated (with the generation prompt) or raw. `text`
    may be a record's chat messages (`jaxevo.data.records.chat_of`), which need the template."""
    if chat_template or not isinstance(text, str):
        if not chat_template:
            raise ConfigError("records with chat `messages` need data.chat_template: true")
        return chat_prompt(tok, text, system)
    return text if system is None else f"{system}\n\n{text}"


def tokenize_views(
    records: Sequence[Mapping[str, Any]],
    view_specs: Sequence[tuple[str, Any, Any]],
    tok,
    *,
    max_length: int,
    truncation: str = "left",
    chat_template: bool = True,
    system: str | None = None,
    append_eos: bool = True,
    pad_to_multiple: int = 64,
    templates: Mapping[str, str] | None = None,
) -> TokenizedData:
    """Tokenise every record into the views ``view_specs`` = ``[(name, context_fn, response_fn)]``.

    ``context_fn(record, templates) -> str`` is the user text (wrapped in the chat template when
    ``chat_template``), ``response_fn(record) -> str`` the trained text. Too-long views: with
    ``truncation="left"`` the context loses tokens from its left end (and, if the response alone
    does not fit, the response is cut on the right), counted in ``stats``; with ``"error"`` a
    `ConfigError` names the record.
    """
    templates = dict(templates or {})
    n = len(records)
    eos = getattr(tok, "eos_token_id", None)
    if append_eos and eos is None:
        raise ConfigError("data.append_eos=true but the tokenizer has no eos token")
    # Encode every distinct context / response once (views often share the prompt).
    ctx_text = [[format_context(tok, c(r, templates), chat_template, system) for r in records]
                for _, c, _ in view_specs]
    resp_text = [[f(r) for r in records] for _, _, f in view_specs]
    uniq = sorted({t for rows in ctx_text + resp_text for t in rows})
    ids = dict(zip(uniq, _encode_many(tok, uniq)))

    stats = {"examples": n, "prompt_truncated": 0, "response_truncated": 0}
    seqs: list[list[tuple[list[int], list[int]]]] = [[] for _ in view_specs]
    for i in range(n):
        # Views with the same context are cut by the same amount (a pair keeps one prompt).
        resp = [ids[resp_text[v][i]] + ([eos] if append_eos else []) for v in range(len(view_specs))]
        longest: dict[str, int] = {}
        for v in range(len(view_specs)):
            c = ctx_text[v][i]
            longest[c] = max(longest.get(c, 0), len(resp[v]))
        cut_prompt = cut_resp = False
        for v in range(len(view_specs)):
            ctx = ids[ctx_text[v][i]]
            r = resp[v]
            if not ctx:
                ctx = [eos if eos is not None else 0]  # something must predict the first token
            budget = max_length - longest[ctx_text[v][i]]
            if len(ctx) > budget or len(ctx) + len(r) > max_length:
                if truncation == "error":
                    raise ConfigError(
                        f"record {i} (view {view_specs[v][0]!r}): {len(ctx)} prompt + {len(r)} response "
                        f"tokens > data.max_length={max_length}; raise max_length or set "
                        "data.truncation=left")
                keep = max(1, budget)
                if len(ctx) > keep:
                    ctx = ctx[len(ctx) - keep:]
                    cut_prompt = True
                if len(ctx) + len(r) > max_length:
                    r = r[: max_length - len(ctx)]
                    cut_resp = True
            seqs[v].append((ctx, r))
        stats["prompt_truncated"] += cut_prompt
        stats["response_truncated"] += cut_resp
    if stats["prompt_truncated"] or stats["response_truncated"]:
        log.warning("truncated %d prompts (left) and %d responses (right) of %d examples to "
                    "max_length=%d", stats["prompt_truncated"], stats["response_truncated"], n,
                    max_length)

    longest_row = max(len(c) + len(r) for rows in seqs for c, r in rows)
    m = max(1, int(pad_to_multiple))
    t = min(max_length, -(-longest_row // m) * m)
    arrays: dict[str, np.ndarray] = {}
    for (name, _, _), rows in zip(view_specs, seqs):
        a = {k: np.zeros((n, t), np.int32) for k in VIEW_KEYS}
        a["labels"][:] = -1
        for i, (c, r) in enumerate(rows):
            seq = c + r
            L = len(seq)
            a["tokens"][i, :L] = seq
            a["segments"][i, :L] = 1
            a["positions"][i, :L] = np.arange(L)
            a["labels"][i, len(c) - 1: L - 1] = r
        for k, v in a.items():
            arrays[f"{name}/{k}"] = v
    return TokenizedData(arrays=arrays, views=tuple(n for n, _, _ in view_specs), stats=stats)


def pack(data: TokenizedData, max_length: int, pad_to_multiple: int = 64) -> TokenizedData:
    """Pack the rows of a single-view data set (SFT) into rows of ``max_length`` tokens.

    First-fit-decreasing; every example keeps its own segment id and positions from 0, so the
    attention mask keeps examples apart. Per-example extras are dropped (packed rows have none).
    """
    if len(data.views) != 1:
        raise ConfigError("packing works for single-view (SFT) data only")
    v = data.views[0]
    seg = data.arrays[f"{v}/segments"]
    lengths = (seg > 0).sum(axis=1)
    order = np.argsort(-lengths, kind="stable")
    bins: list[list[int]] = []
    free: list[int] = []
    for i in order:
        L = int(lengths[i])
        for b, f in enumerate(free):
            if f >= L:
                bins[b].append(int(i))
                free[b] -= L
                break
        else:
            bins.append([int(i)])
            free.append(max_length - L)
    longest = max(max_length - f for f in free)
    m = max(1, int(pad_to_multiple))
    t = min(max_length, -(-longest // m) * m)
    out = {k: np.zeros((len(bins), t), np.int32) for k in VIEW_KEYS}
    out["labels"][:] = -1
    for b, members in enumerate(bins):
        pos = 0
        for s, i in enumerate(members, 1):
            L = int(lengths[i])
            for k in VIEW_KEYS:
                out[k][b, pos: pos + L] = data.arrays[f"{v}/{k}"][i, :L]
            out["segments"][b, pos: pos + L] = s
            pos += L
    stats = dict(data.stats, packed_rows=len(bins))
    return TokenizedData(arrays={f"{v}/{k}": a for k, a in out.items()}, views=data.views, stats=stats)


# ----------------------------------------------------------------------------- batch order


@dataclasses.dataclass(frozen=True)
class BatchStream:
    """Fixed-size batches in a shuffled epoch-by-epoch order that is a pure function of the step.

    ``batch(step)`` holds examples ``step*B .. step*B+B-1`` of the infinite sequence
    ``perm(seed, 0) ++ perm(seed, 1) ++ ...``; resuming at step k needs nothing but k.
    """

    data: TokenizedData
    batch_size: int
    seed: int = 0
    shuffle: bool = True
    pad_to_multiple: int = 64

    def _perm(self, epoch: int) -> np.ndarray:
        n = self.data.num_examples
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, epoch]).permutation(n)

    def indices(self, step: int) -> np.ndarray:
        n = self.data.num_examples
        pos = np.arange(step * self.batch_size, (step + 1) * self.batch_size)
        epochs = pos // n
        out = np.empty_like(pos)
        for e in np.unique(epochs):
            sel = epochs == e
            out[sel] = self._perm(int(e))[pos[sel] % n]
        return out

    def batch(self, step: int) -> Batch:
        return self.data.take(self.indices(step), self.pad_to_multiple)

    def __iter__(self) -> Iterable[Batch]:
        step = 0
        while True:
            yield self.batch(step)
            step += 1
