"""The Python API of the sampler: prompts (or chat messages) in, completions out.

    sampler = Sampler.load("smollm2-135m-instruct")            # bf16 weights + activations
    outs = sampler.generate(["What is 12+35?"], SamplingParams(temperature=0.8, n=4))
    outs[0][2].text, outs[0][2].logprob, outs[0][2].finish_reason

`generate` returns one list per prompt of `n` `Completion`s, in the input order. Behind it: prompts
are tokenised (the chat template applied when `chat=True`), sorted by length and packed into
batches of at most `max_batch` rows (a prompt's n samples share one prefill); prompt lengths, batch
sizes and max-new-tokens are rounded up to a small set of buckets so a whole run compiles a
handful of programs. A prompt that does not fit `max_length - max_new_tokens` raises a
`JaxevoError` naming it, unless `truncate=True`, which keeps its last tokens and reports the cut in
`Completion.truncated_tokens` (and a warning).

Log-probs (`Completion.token_logprobs`, their sum `Completion.logprob`) are under the model's own
distribution — raw logits, temperature 1, no filters — whatever the sampling settings, so they are
the teacher-forced log-probs of `token_ids` after the prompt (to float rounding of the compute
dtype; exact to ~1e-5 in float32). They include the stop token when finish_reason is "eos", and the
tokens up to the one that completed the stop string when it is "stop"; `text` never contains the
stop token or stop string.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
import warnings
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxevo.errors import ConfigError, JaxevoError
from jaxevo.models.config import ModelConfig
from jaxevo.sampling import sampler as core
from jaxevo.sampling.processors import Knobs, Mode

FINISH = {core.LENGTH: "length", core.EOS: "eos"}
MAX_STOP_IDS = 8


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How to sample. temperature 0 = greedy. top_k 0 and top_p 1 and min_p 0 = off."""

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    n: int = 1
    seed: int = 0
    stop: tuple[str, ...] = ()  # stop strings (checked on the host; trimmed from the text)
    stop_token_ids: tuple[int, ...] | None = None  # None: the tokenizer's eos + end-of-turn ids
    speculate: int = 0  # prompt-lookup draft tokens verified per step (0 = off); see lookup.py
    lookup_ngram: int = 3  # longest n-gram searched for in the prompt + output

    def __post_init__(self):
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        object.__setattr__(self, "stop", tuple(self.stop))
        if self.stop_token_ids is not None:
            object.__setattr__(self, "stop_token_ids", tuple(int(i) for i in self.stop_token_ids))
        checks = [
            (self.max_new_tokens >= 1, "max_new_tokens must be >= 1"),
            (self.temperature >= 0, "temperature must be >= 0 (0 = greedy)"),
            (self.top_k >= 0, "top_k must be >= 0 (0 = off)"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (0 <= self.min_p <= 1, "min_p must be in [0, 1]"),
            (self.repetition_penalty > 0, "repetition_penalty must be > 0"),
            (self.n >= 1, "n must be >= 1"),
            (all(self.stop), "stop strings must be non-empty"),
            (self.speculate >= 0 and self.lookup_ngram >= 1, "speculate must be >= 0, lookup_ngram >= 1"),
            (not self.speculate or (self.top_k == 0 and self.top_p == 1 and self.repetition_penalty == 1),
             "speculate (prompt-lookup decoding) supports greedy, temperature and min_p sampling only"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"SamplingParams: {msg} (got {self})")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def mode(self, vocab_size: int) -> Mode:
        return Mode(
            greedy=self.greedy,
            top_k=0 if self.greedy or self.top_k == 0 or self.top_k >= vocab_size else int(self.top_k),
            top_p=not self.greedy and self.top_p < 1,
            min_p=not self.greedy and self.min_p > 0,
            repetition_penalty=self.repetition_penalty != 1,
        )

    def knobs(self) -> Knobs:
        return Knobs.make(self.temperature if self.temperature > 0 else 1.0, self.top_p, self.min_p,
                          self.repetition_penalty)


@dataclasses.dataclass(frozen=True)
class Completion:
    text: str
    token_ids: tuple[int, ...]
    token_logprobs: np.ndarray  # f32 [len(token_ids)], raw-model log-probs
    logprob: float  # sum of token_logprobs
    finish_reason: str  # "eos" | "stop" | "length"
    prompt_index: int
    sample_index: int
    prompt_tokens: int  # prompt length actually used (after truncation)
    truncated_tokens: int = 0  # prompt tokens dropped from the left (truncate=True only)

    @property
    def length(self) -> int:
        return len(self.token_ids)


@dataclasses.dataclass
class RunStats:
    prompts: int = 0
    completions: int = 0
    new_tokens: int = 0
    batches: int = 0  # decode calls (batch at a time), or pool refills (continuous)
    seconds: float = 0.0
    prefill_seconds: float = 0.0
    shapes: set = dataclasses.field(default_factory=set)  # distinct (N, P, T, S) compiled shapes
    truncated_prompts: int = 0
    decode_steps: int = 0  # forward passes of the whole batch after prefill
    draft_accepted: int = 0  # speculative decoding only: accepted draft tokens

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0

    def add(self, other: "RunStats") -> None:
        """Accumulate another call's counts and times (a call over part of the same prompts)."""
        for f in dataclasses.fields(self):
            if f.name == "shapes":
                self.shapes |= other.shapes
            elif f.name != "prompts":
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


# --------------------------------------------------------------------------------- buckets
def length_bucket(x: int, minimum: int = 16, chunk: int = 256) -> int:
    """Smallest of {2^k, 3 * 2^(k-1)} >= x (>= minimum); above `chunk`, a multiple of chunk."""
    if x > chunk:
        return -(-x // chunk) * chunk
    b = minimum
    while b < x:
        if b * 3 // 2 >= x and (b * 3) % 2 == 0:
            return b * 3 // 2
        b *= 2
    return b


def batch_bucket(x: int, multiple: int = 1, maximum: int | None = None) -> int:
    """Next power of two >= x, a multiple of `multiple` (the batch shard count), capped at the
    `maximum` batch rounded up to that multiple."""
    b = 1 << max(0, math.ceil(math.log2(max(x, 1))))
    b = -(-max(b, multiple) // multiple) * multiple
    if maximum is not None:
        b = min(b, -(-maximum // multiple) * multiple)
    return max(b, -(-x // multiple) * multiple)


# --------------------------------------------------------------------------------- sampler
class Sampler:
    """Holds the model, its mesh, the prepared decode weights and a reusable KV-cache buffer;
    compiled programs are shared process-wide (jit caches). Rebuild with new params after a
    training phase: `sampler.with_params(params)`.

    cfg, params, tokenizer: as returned by `load_pretrained` (`Sampler.load(M)` does that).
    mesh: a `jaxevo.sharding.make_mesh` mesh (params already sharded for it), or None.
    max_batch: rows (prompt x sample) per decode call. max_length: context limit for prompt + new
    tokens (default cfg.max_position_embeddings). prefill_chunk: prompt tokens per prefill pass.
    min_prompt_bucket / prompt_buckets: prompt lengths are padded to the next of
    {2^k, 3 * 2^(k-1)} >= min_prompt_bucket (multiples of prefill_chunk above it), or to the next of
    an explicit `prompt_buckets` list. matmul_dtype: storage dtype of the prepared weights (see
    `step.prepare_weights`; default `sampler.default_matmul_dtype`). continuous: refill rows that
    finish with waiting prompts while the others decode on (`pool.py`; the same completions to
    float rounding; fewer idle rows when completion lengths vary widely); ignored with
    speculative decoding.
    """

    def __init__(self, cfg: ModelConfig, params: Any, tokenizer: Any = None, *, mesh=None,
                 max_batch: int = 64, max_length: int | None = None, prefill_chunk: int = 256,
                 min_prompt_bucket: int = 16, matmul_dtype: str | None = None,
                 prompt_buckets: Sequence[int] | None = None, continuous: bool = False):
        self.cfg = cfg
        self.continuous = continuous
        self.params = params
        self.matmul_dtype = matmul_dtype
        self.prompt_buckets = tuple(sorted(prompt_buckets)) if prompt_buckets else None
        self._weights = None
        self.tokenizer = tokenizer
        self.mesh = mesh
        self.max_batch = max_batch
        self.max_length = max_length or cfg.max_position_embeddings
        self.prefill_chunk = prefill_chunk
        self.min_prompt_bucket = min_prompt_bucket
        self.last_stats = RunStats()
        self._cache = None

    @classmethod
    def load(cls, model: str, *, dtype: str = "bfloat16", mesh=None, **kw) -> "Sampler":
        """Load model `M` (HF dir, .gguf, checkpoint, embedded name). bf16 by default: bf16 weights
        and activations with f32 accumulation is the fast recipe for sampling; pass
        dtype="float32" for exact f32 log-probs."""
        from jaxevo.weights.load import load_pretrained

        m = load_pretrained(model, dtype=dtype, param_dtype=dtype, mesh=mesh)
        return cls(m.cfg, m.params, m.tokenizer, mesh=mesh, **kw)

    def with_params(self, params) -> "Sampler":
        """The same sampler on new params (e.g. after a training phase); compiled programs are
        shared (jit caches them process-wide)."""
        return Sampler(self.cfg, params, self.tokenizer, mesh=self.mesh, max_batch=self.max_batch,
                       max_length=self.max_length, prefill_chunk=self.prefill_chunk,
                       min_prompt_bucket=self.min_prompt_bucket, matmul_dtype=self.matmul_dtype,
                       prompt_buckets=self.prompt_buckets, continuous=self.continuous)

    @property
    def weights(self):
        """The decode weights (`step.prepare_weights`), made once from `params` and kept: they
        hold a copy of the matrices in `matmul_dtype` (default: `sampler.default_matmul_dtype`).
        Delete `params` yourself if you no longer need them."""
        if self._weights is None:
            platform = (self.mesh.devices.flat[0] if self.mesh is not None else jax.devices()[0]).platform
            mm = self.matmul_dtype or core.default_matmul_dtype(self.cfg, platform)
            with _mesh_ctx(self.mesh):
                self._weights = core.prepare_weights(self.params, cfg=self.cfg, matmul_dtype=mm)
        return self._weights

    # ------------------------------------------------------------------ tokens
    def _need_tokenizer(self):
        if self.tokenizer is None:
            raise JaxevoError("this Sampler has no tokenizer: pass token ids to generate_ids()")
        return self.tokenizer

    def prompt_text(self, prompt: str | Sequence[dict], chat: bool = True) -> str:
        """The text fed to the model for one prompt (chat template applied when chat=True)."""
        tok = self._need_tokenizer()
        if isinstance(prompt, str):
            if not chat:
                return prompt
            from jaxevo.tokenizer import chat_prompt

            return chat_prompt(tok, prompt)
        messages = list(prompt)
        if not chat:
            raise JaxevoError("a list of chat messages needs chat=True")
        if not getattr(tok, "chat_template", None):
            raise JaxevoError("the tokenizer has no chat template; give plain-text prompts")
        return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def encode(self, prompts: Sequence[str | Sequence[dict]], chat: bool = True) -> list[list[int]]:
        tok = self._need_tokenizer()
        texts = [self.prompt_text(p, chat) for p in prompts]
        # A chat template writes its own BOS; plain text gets the tokenizer's special tokens.
        enc = tok(texts, add_special_tokens=not chat)["input_ids"]
        return [list(e) for e in enc]

    def default_stop_ids(self) -> tuple[int, ...]:
        if self.tokenizer is not None:
            from jaxevo.tokenizer import stop_token_ids

            ids = stop_token_ids(self.tokenizer)
            if ids:
                return tuple(ids)
        eos = self.cfg.eos_token_id
        return tuple(eos) if isinstance(eos, tuple) else (() if eos is None else (eos,))

    # ---------------------------------------------------------------- generate
    def generate(self, prompts: Sequence[str | Sequence[dict]], sampling: SamplingParams | None = None,
                 *, chat: bool = True, truncate: bool = False, progress: bool | None = None,
                 first_index: int = 0, **overrides) -> list[list[Completion]]:
        """Completions for each prompt: a str, or a list of {"role", "content"} messages.

        `overrides` are SamplingParams fields (e.g. temperature=0.8, n=4). Returns, per prompt in
        input order, a list of n Completions. `first_index` is the index of prompts[0] in a longer
        list this call is a slice of: sample j of prompt i draws the random stream of global sample
        (first_index + i) * n + j, so generating a list in slices gives the same completions as
        generating it whole (what lets a killed stage resume mid-sampling)."""
        if isinstance(prompts, (str, dict)):
            raise JaxevoError("generate() takes a list of prompts")
        return self.generate_ids(self.encode(prompts, chat), sampling, truncate=truncate,
                                 progress=progress, first_index=first_index, **overrides)

    def generate_ids(self, prompt_ids: Sequence[Sequence[int]], sampling: SamplingParams | None = None,
                     *, truncate: bool = False, progress: bool | None = None, first_index: int = 0,
                     **overrides) -> list[list[Completion]]:
        """Like `generate`, from token ids (no template, no special tokens added)."""
        sp = dataclasses.replace(sampling or SamplingParams(), **overrides)
        cfg = self.cfg
        ids, cut = self._fit(prompt_ids, sp.max_new_tokens, truncate)
        stop_ids = tuple(sp.stop_token_ids) if sp.stop_token_ids is not None else self.default_stop_ids()
        if len(stop_ids) > MAX_STOP_IDS:
            raise ConfigError(f"at most {MAX_STOP_IDS} stop token ids (got {len(stop_ids)})")
        stop_arr = jnp.asarray(list(stop_ids) + [-1] * (MAX_STOP_IDS - len(stop_ids)), jnp.int32)
        mode, knobs = sp.mode(cfg.vocab_size), sp.knobs()
        key = jax.random.key(sp.seed)
        shard = self._batch_shards()
        max_rows = max(self.max_batch, shard)
        m_bucket = length_bucket(sp.max_new_tokens, minimum=8, chunk=1 << 30)

        order = sorted(range(len(ids)), key=lambda i: (-len(ids[i]), i))
        rows = [(p, s) for p in order for s in range(sp.n)]
        results: list[list[Completion | None]] = [[None] * sp.n for _ in ids]
        stats = RunStats(prompts=len(ids), truncated_prompts=sum(1 for c in cut if c))
        show = progress if progress is not None else len(rows) > max_rows
        bar = _progress(len(rows), show)
        t_start = time.perf_counter()
        common = (ids, sp.n, m_bucket, sp.max_new_tokens, stop_arr, key, mode, knobs, shard, stats)
        try:
            if self.continuous and not sp.speculate:
                finished = self._run_pool(rows, *common, first_index)
            else:
                finished = self._run_groups(rows, *common, sp.speculate, sp.lookup_ngram, first_index)
            for out, done in finished:
                for r, (p, s) in done:
                    results[p][s] = self._completion(out, r, p, s, len(ids[p]), cut[p], stop_ids, sp.stop)
                    stats.new_tokens += int(out.lengths[r])
                stats.completions += len(done)
                bar.update(len(done))
                bar.set_postfix(tok_s=f"{stats.new_tokens / (time.perf_counter() - t_start):.0f}")
        finally:
            bar.close()
        stats.seconds = time.perf_counter() - t_start
        self.last_stats = stats
        return results  # type: ignore[return-value]

    # ---------------------------------------------------------------- internals
    def _batch_shards(self) -> int:
        if self.mesh is None:
            return 1
        return self.mesh.shape["data"] * self.mesh.shape["fsdp"]

    def _fit(self, prompt_ids, max_new: int, truncate: bool):
        room = self.max_length - max_new
        ids, cut = [], []
        for i, p in enumerate(prompt_ids):
            p = [int(t) for t in p]
            if not p:
                raise JaxevoError(f"prompt {i} is empty (0 tokens)")
            if len(p) > room:
                if not truncate or room < 1:
                    raise JaxevoError(
                        f"prompt {i} has {len(p)} tokens but only {max(room, 0)} fit: max_length "
                        f"{self.max_length} - max_new_tokens {max_new}; shorten it, lower "
                        f"max_new_tokens, or pass truncate=True to keep its last {max(room, 0)} tokens")
                cut.append(len(p) - room)
                p = p[-room:]
            else:
                cut.append(0)
            ids.append(p)
        if any(cut):
            n = sum(1 for c in cut if c)
            warnings.warn(f"truncated {n} prompt(s) from the left to {room} tokens "
                          f"(see Completion.truncated_tokens)", stacklevel=3)
        return ids, cut

    def _run_groups(self, rows, ids, n, m_bucket, max_new, stop_arr, key, mode, knobs, shard, stats,
                    speculate, ngram, first_index):
        """Batches of `max_batch` rows, each decoded until its last row stops. Yields
        (host Output, [(row, (prompt, sample)), ...]) per batch."""
        max_rows = max(self.max_batch, shard)
        for g in range(0, len(rows), max_rows):
            group = rows[g:g + max_rows]
            out = self._run_group(ids, group, n, m_bucket, max_new, stop_arr, key, mode, knobs, shard,
                                  stats, speculate, ngram, first_index)
            stats.batches += 1
            yield out, list(enumerate(group))

    def _run_pool(self, rows, ids, n, m_bucket, max_new, stop_arr, key, mode, knobs, shard, stats,
                  first_index):
        """Continuous batching (`pool.py`): rows that finish take the next waiting (prompt, sample).
        Yields like `_run_groups`. A pool's prompt slots T fit its longest prompt; rows come longest
        first, and a new pool starts only where at least `max_batch` remaining rows fit half of T:
        each pool ends with a drain (rows finish, none come in), which costs more than attending
        over up to 2x padded prompt slots (measured: two pools for prompt buckets 96 and 64 took
        550 decode steps where one batch at a time took 508)."""
        from jaxevo.sampling import pool

        cfg = self.cfg
        pools: list[tuple[int, list]] = []
        for i, (p, smp) in enumerate(rows):
            t = self._prompt_bucket(len(ids[p]))
            if not pools or (2 * t <= pools[-1][0] and len(rows) - i >= self.max_batch):
                pools.append((t, []))
            pools[-1][1].append((p, smp))
        for t, queue in pools:
            nb = batch_bucket(min(len(queue), self.max_batch), shard, self.max_batch)
            s = t + m_bucket
            cache = self._take_cache(nb, s)
            with _mesh_ctx(self.mesh):
                state = pool.empty_state(nb, m_bucket, s, cfg=cfg, mode=mode)
            stats.shapes.add((nb, nb, t, s))
            refill_at = max(1, nb // 8)  # a refill costs a prefill pass over the weights: batch them
            owner: list = [None] * nb
            q = 0
            while True:
                free = [r for r in range(nb) if owner[r] is None]
                if q < len(queue) and free:
                    take = queue[q:q + len(free)]
                    q += len(take)
                    cache, state = self._start_rows(cache, state, ids, take, free, n, nb, t, max_new,
                                                    stop_arr, key, mode, knobs, shard, first_index)
                    for r, row in zip(free, take):
                        owner[r] = row
                    stats.batches += 1
                if all(o is None for o in owner):
                    break
                at = refill_at if q < len(queue) else nb + 1
                with _mesh_ctx(self.mesh):
                    cache, state, steps = pool.run(self.weights, cache, state, stop_arr, knobs, jnp.int32(at),
                                                   cfg=cfg, mode=mode, mesh=self.mesh)
                stats.decode_steps += int(steps)
                out = _to_host(core.Output(state.tokens, state.logprobs, state.step, state.finish))
                # an owned row is done exactly when it has a finish code (free rows keep NOT_RUN)
                finished = [(r, owner[r]) for r in range(nb)
                            if owner[r] is not None and out.finish[r] != core.NOT_RUN]
                for r, _ in finished:
                    owner[r] = None
                yield out, finished
            self._cache = cache

    def _take_cache(self, nb: int, s: int):
        """The reusable cache buffer if it has this shape, else a new one (the old one freed first)."""
        cache = self._cache
        if cache is None or cache.v[0].shape[0] != nb or cache.v[0].shape[2] != s:
            self._cache = cache = None
            cache = core.new_cache(self.cfg, nb, s, self.mesh)
        self._cache = None
        return cache

    def _start_rows(self, cache, state, ids, take, free, n, nb, t, max_new, stop_arr, key, mode, knobs,
                    shard, first_index):
        """Prefill the prompts of `take` [(prompt, sample)] and start them in pool rows `free`."""
        from jaxevo.sampling import pool

        prompts = list(dict.fromkeys(p for p, _ in take))
        where = {p: j for j, p in enumerate(prompts)}
        pb = batch_bucket(len(prompts), shard, self.max_batch)
        rb = batch_bucket(len(take), shard, self.max_batch)
        tokens, valid = self._left_padded([ids[p] for p in prompts], pb, t)
        dest = np.full(rb, nb, np.int32)  # nb: padding entry, dropped
        row_prompt = np.zeros(rb, np.int32)
        row_ids = np.zeros(rb, np.int32)
        for j, ((p, smp), r) in enumerate(zip(take, free)):
            dest[j], row_prompt[j], row_ids[j] = r, where[p], (first_index + p) * n + smp
        put = self._put
        with _mesh_ctx(self.mesh):
            return pool.start(self.weights, cache, state, put(tokens), put(valid), put(dest),
                              put(row_prompt), put(row_ids), put(np.full(rb, max_new, np.int32)),
                              stop_arr, key, knobs, cfg=self.cfg, mode=mode, mesh=self.mesh,
                              chunk=self.prefill_chunk)

    def _run_group(self, ids, group, n, m_bucket, max_new, stop_arr, key, mode, knobs, shard, stats,
                   sp_speculate=0, sp_ngram=3, first_index=0):
        cfg = self.cfg
        prompts = list(dict.fromkeys(p for p, _ in group))
        slot = {p: j for j, p in enumerate(prompts)}
        nb = batch_bucket(len(group), shard, self.max_batch)
        pb = batch_bucket(len(prompts), shard, self.max_batch)
        t = self._prompt_bucket(max(len(ids[p]) for p in prompts))
        s = t + m_bucket + (sp_speculate + 1 if sp_speculate else 0)
        tokens, valid = self._left_padded([ids[p] for p in prompts], pb, t)
        row_prompt = np.zeros(nb, np.int32)
        row_ids = np.zeros(nb, np.int32)
        live = np.zeros(nb, bool)
        for r, (p, smp) in enumerate(group):
            row_prompt[r], row_ids[r], live[r] = slot[p], (first_index + p) * n + smp, True
        limit = np.full(nb, max_new, np.int32)

        put = self._put
        rows = core.Rows(put(row_prompt), put(row_ids), put(live), put(limit))
        tokens_d, valid_d = put(tokens), put(valid)
        cache = self._take_cache(nb, s)
        stats.shapes.add((nb, pb, t, s))
        ctx = _mesh_ctx(self.mesh)
        t0 = time.perf_counter()
        with ctx:
            cache, logits = core.prefill(self.weights, cache, tokens_d, valid_d, rows.prompt, cfg=cfg,
                                         mesh=self.mesh, chunk=self.prefill_chunk)
            if stats.batches == 0:
                jax.block_until_ready(logits)
                stats.prefill_seconds += time.perf_counter() - t0
            if sp_speculate:
                from jaxevo.sampling.lookup import decode_lookup

                cache, out, spec = decode_lookup(self.weights, cache, logits, tokens_d, valid_d, rows,
                                                 stop_arr, key, knobs, cfg=cfg, mode=mode, mesh=self.mesh,
                                                 k=sp_speculate, ngram=sp_ngram)
                stats.decode_steps += int(spec["steps"])
                stats.draft_accepted += int(spec["accepted"])
            else:
                cache, out = core.decode(self.weights, cache, logits, tokens_d, valid_d, rows, stop_arr,
                                         key, knobs, cfg=cfg, mode=mode, mesh=self.mesh)
        self._cache = cache
        out = _to_host(out)
        if not sp_speculate:
            stats.decode_steps += max(int(out.lengths.max()) - 1, 0)
        return out

    def _left_padded(self, prompts: list[list[int]], rows: int, t: int):
        """(tokens [rows, t] int32, valid [rows, t] bool): the prompts left-padded to t slots;
        rows beyond len(prompts) are all padding."""
        tokens = np.full((rows, t), core.pad_id(self.cfg), np.int32)
        valid = np.zeros((rows, t), bool)
        for j, p in enumerate(prompts):
            tokens[j, t - len(p):] = p
            valid[j, t - len(p):] = True
        return tokens, valid

    def _prompt_bucket(self, length: int) -> int:
        if self.prompt_buckets:
            for b in self.prompt_buckets:
                if b >= length and (b <= self.prefill_chunk or b % self.prefill_chunk == 0):
                    return b
        return length_bucket(length, self.min_prompt_bucket, self.prefill_chunk)

    def _put(self, x: np.ndarray):
        if self.mesh is None:
            return jnp.asarray(x)
        from jax.sharding import NamedSharding, PartitionSpec as P

        spec = core.rows_spec(self.mesh, x.shape[0])
        return jax.device_put(x, NamedSharding(self.mesh, P(*spec, *([None] * (x.ndim - 1)))))

    def _completion(self, out, r, p, s, plen, cut, stop_ids, stop_strings) -> Completion:
        n = int(out.lengths[r])
        toks = [int(x) for x in out.tokens[r, :n]]
        lps = np.asarray(out.logprobs[r, :n], np.float32)
        finish = FINISH.get(int(out.finish[r]), "length")
        body = toks[:-1] if finish == "eos" else toks
        text = self._decode(body)
        if stop_strings and self.tokenizer is not None:
            hit = _find_stop(text, stop_strings)
            if hit is not None:
                k = _stop_prefix_len(self._decode, body, stop_strings)
                toks, lps, text, finish = body[:k], lps[:k], text[:hit], "stop"
        return Completion(text=text, token_ids=tuple(toks), token_logprobs=lps,
                          logprob=float(np.sum(lps, dtype=np.float64)), finish_reason=finish,
                          prompt_index=p, sample_index=s, prompt_tokens=plen, truncated_tokens=cut)

    def _decode(self, ids) -> str:
        if self.tokenizer is None:
            return ""
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def generate(model: str | Sampler, prompts, sampling: SamplingParams | None = None, **kw):
    """One-shot helper: `generate("smollm2-135m-instruct", ["Hi"], temperature=0.8)`."""
    sampler = model if isinstance(model, Sampler) else Sampler.load(model)
    return sampler.generate(prompts, sampling, **kw)


# ------------------------------------------------------------------------------ helpers
def _find_stop(text: str, stops: Sequence[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


def _stop_prefix_len(decode, ids, stops) -> int:
    """Fewest leading tokens whose text contains a stop string (binary search)."""
    lo, hi = 1, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if _find_stop(decode(ids[:mid]), stops) is not None:
            hi = mid
        else:
            lo = mid + 1
    return hi


def _mesh_ctx(mesh):
    if mesh is None:
        return contextlib.nullcontext()
    from jaxevo.sharding import use_mesh

    return use_mesh(mesh)


def _to_host(out):
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        out = multihost_utils.process_allgather(out, tiled=True)
    return jax.tree.map(np.asarray, jax.device_get(out))


class _NoBar:
    def update(self, *_):
        pass

    def set_postfix(self, **_):
        pass

    def close(self):
        pass


def _progress(total: int, show: bool):
    if not show:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="seq", desc="sampling", dynamic_ncols=True)
