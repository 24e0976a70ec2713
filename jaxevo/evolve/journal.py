"""Sampling that survives a kill: a stage's generate() calls keep their finished chunks on disk.

A round spends most of its time sampling, and a stage killed half-way (out of memory, a preempted
TPU VM) used to start its sampling over. `JournaledSampler` wraps the stage's `Sampler`: each
generate() call runs in chunks of about `chunk_rows` completions and appends every finished chunk
to `samples_KK.jsonl` in the stage's `.partial` folder (KK counts the stage's calls). A rerun of
the stage makes the same calls in the same order (stages are deterministic), finds the chunks
already there and samples only the rest. The sampler draws sample j of prompt i from the random
stream of its global index (`first_index`), not of its chunk, so in f32 the completions are those
of one uninterrupted call. In bf16 a chunk's batches pad to other lengths, and the rounding can
flip a near-tie token: a resumed stage is then a different but equally valid draw.

A journal is used only when its first line matches the call (prompts, sampling parameters, chat
template flag, model); otherwise it is started over. A line cut short by a kill is dropped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from jaxevo import distributed
from jaxevo.evolve.rundir import atomic_write_text
from jaxevo.sampling.api import Completion, RunStats, SamplingParams
from jaxevo.sampling.progress import progress_bar


class JournaledSampler:
    """A `Sampler` proxy whose generate() journals to `next_path()` (a fresh path per call)."""

    def __init__(self, sampler, model: str, next_path, chunk_rows: int):
        self._sampler, self._model, self._next_path = sampler, model, next_path
        self._chunk_rows = max(1, int(chunk_rows))
        self.last_stats = None

    def __getattr__(self, name: str) -> Any:  # everything else is the sampler's
        return getattr(self._sampler, name)

    def generate(self, prompts: Sequence, sampling=None, *, chat: bool = True, truncate: bool = False,
                 progress: bool | None = None, **overrides) -> list[list]:
        """`Sampler.generate`, resumable. Returns per prompt a list of n Completions."""
        sp = dataclasses.replace(sampling or SamplingParams(), **overrides)
        path = self._next_path()
        if path is None:  # no running stage, or journal_rows=0
            out = self._sampler.generate(prompts, sp, chat=chat, truncate=truncate, progress=progress)
            self.last_stats = self._sampler.last_stats
            return out
        header = {"journal": 1, "key": _fingerprint(prompts, sp, chat, truncate, self._model)}
        done = _load(path, header)
        per_chunk = max(1, self._chunk_rows // sp.n)
        stats = RunStats(prompts=len(prompts))
        rows = len(prompts) * sp.n
        show = progress if progress is not None else rows > self._sampler.max_batch
        bar = progress_bar(rows, show)
        bar.update(len(done) * sp.n)
        try:
            for start in range(len(done), len(prompts), per_chunk):
                # a shown bar advances as the slice's rows decode (every `check_every` steps)
                bar.n = len(done) * sp.n
                part = self._sampler.generate(prompts[start:start + per_chunk], sp, chat=chat,
                                              truncate=truncate, progress=False, first_index=start,
                                              bar=bar if show else None)
                part = [[dataclasses.replace(c, prompt_index=start + i) for c in cs]
                        for i, cs in enumerate(part)]
                _append(path, {"start": start, "completions": [[_to_json(c) for c in cs] for cs in part]})
                done.extend(part)
                stats.add(self._sampler.last_stats)
                bar.n = len(done) * sp.n
                bar.set_postfix(tok_s=f"{stats.tokens_per_second:.0f}")
        finally:
            bar.close()
        self.last_stats = stats
        return done


def _fingerprint(prompts, sp, chat: bool, truncate: bool, model: str) -> str:
    blob = json.dumps({"prompts": list(prompts), "sampling": dataclasses.asdict(sp), "chat": chat,
                       "truncate": truncate, "model": str(model)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _load(path: Path, header: dict) -> list[list]:
    """The completions already journaled at `path` for this call ([] when none or stale). Leaves
    a clean journal (the header and the whole, consecutive chunks) in place for appending."""
    lines = path.read_text().split("\n") if path.exists() else []
    recs: list[dict] = []
    if lines and _parse(lines[0]) == header:
        covered = 0
        for line in lines[1:]:
            rec = _parse(line)
            if rec is None or rec.get("start") != covered:
                break  # a line cut short by the kill, and everything after it
            recs.append(rec)
            covered += len(rec["completions"])
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in [header, *recs]))
    return [[_from_json(c) for c in cs] for r in recs for cs in r["completions"]]


def _parse(line: str) -> dict | None:
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        return None
    return rec if isinstance(rec, dict) else None


def _append(path: Path, rec: dict) -> None:
    if distributed.is_main():  # process 0 writes (see rundir); every process has the same result
        with open(path, "a") as f:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def _to_json(c) -> dict:
    return dict(dataclasses.asdict(c), token_logprobs=np.asarray(c.token_logprobs, np.float32).tolist())


def _from_json(d: dict) -> Completion:
    return Completion(**dict(d, token_ids=tuple(d["token_ids"]),
                             token_logprobs=np.asarray(d["token_logprobs"], np.float32)))

