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
import time
import warnings
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from jaxevo.errors import ConfigError, JaxevoError
from jaxevo.models.config import ModelConfig
from jaxevo.models.decode import prepare_weights
from jaxevo.sampling import cpu_choice, loop
from jaxevo.sampling.lanes import interleave, lane_count, shared
from jaxevo.sampling.params import (Completion, RunStats, SamplingParams, batch_bucket, cache_segments,
                                    length_bucket, stop_hit, stop_prefix_len)
from jaxevo.sampling.prefill_pack import prefill_pack
from jaxevo.sampling.placement import new_cache, rows_sharding
from jaxevo.sampling.progress import progress_bar
from jaxevo.sharding import use_mesh
from jaxevo.tokenizer import chat_prompt, stop_token_ids
from jaxevo.weights.load import load_pretrained

# params' types are re-exported: callers import them from here
__all__ = ["Completion", "RunStats", "Sampler", "SamplingParams", "batch_bucket", "generate", "length_bucket"]

FINISH = {loop.LENGTH: "length", loop.EOS: "eos", loop.STOP: "stop"}
MAX_STOP_IDS = 8
# Narrowing a batch (`Sampler(narrow=True)`): when the running rows fit a quarter of it and at
# least this many new tokens are left to decode. Each smaller batch is another set of programs,
# so only a large cut pays for its compilation (docs/benchmarks.md).
NARROW_SHARE = 4
NARROW_MIN_STEPS = 32


class Sampler:
    """Holds the model, its mesh, the prepared decode weights and a reusable KV-cache buffer;
    compiled programs are shared process-wide (jit caches). Rebuild with new params after a
    training phase: `sampler.with_params(params)`.

    cfg, params, tokenizer: as returned by `load_pretrained` (`Sampler.load(M)` does that).
    mesh: a `jaxevo.sharding.make_mesh` mesh (params already sharded for it), or None.
    max_batch: rows (prompt x sample) in flight. lanes: batches decoded at once by host threads
    (`lanes.py`): None picks two on a CPU when the rows fill more than one batch (each lane's
    batches then hold half of max_batch), one elsewhere. max_length: context limit for prompt + new
    tokens (default cfg.max_position_embeddings). prefill_chunk: prompt tokens per prefill pass.
    min_prompt_bucket / prompt_buckets: prompt lengths are padded to the next of
    {2^k, 3 * 2^(k-1)} >= min_prompt_bucket (multiples of prefill_chunk above it), or to the next of
    an explicit `prompt_buckets` list. matmul_dtype: storage dtype of the prepared weights (see
    `decode.prepare_weights`; on a CPU the dtype and the dot path are measured per machine by
    `cpu_choice.choose`, elsewhere the compute dtype). continuous: refill rows
    that finish with waiting prompts while the others decode on (the same completions to float
    rounding; fewer idle rows when completion lengths vary widely; off by default, see
    docs/benchmarks.md); batch at a time on a CPU, a batch's cache buffer grows in up to 4 segments
    (`params.cache_segments`), as transformers' cache grows with the answer. check_every: decode
    steps between two looks of the host at the rows, when there are stop strings, end-of-answer
    patterns or a progress bar (each look costs a copy of the rows' tokens to the host and their
    detokenisation). narrow: batch at a time, when the rows still running fit a quarter of the
    batch (looked at then, or when the cache grows), decode on with just them (`loop.take_rows`):
    a step costs about in proportion to its rows, done or not.
    """

    def __init__(self, cfg: ModelConfig, params: Any, tokenizer: Any = None, *, mesh=None,
                 max_batch: int = 64, max_length: int | None = None, prefill_chunk: int = 256,
                 min_prompt_bucket: int = 16, matmul_dtype: str | None = None,
                 prompt_buckets: Sequence[int] | None = None, continuous: bool = False,
                 check_every: int = 16, narrow: bool = True, lanes: int | None = None):
        if max_batch < 1 or check_every < 1 or (lanes is not None and lanes < 1):
            raise ConfigError(f"max_batch={max_batch}, check_every={check_every} and lanes={lanes} must be >= 1")
        if (lanes or 1) > 1 and (mesh is not None or continuous):
            raise ConfigError(f"lanes={lanes}: several lanes need continuous=False and no mesh")
        self.cfg, self.params, self.matmul_dtype = cfg, params, matmul_dtype
        self.continuous, self.narrow, self.check_every = continuous, narrow and not continuous, check_every
        self.prompt_buckets = tuple(sorted(prompt_buckets)) if prompt_buckets else None
        self._weights = None
        # The CPU dot path and weight dtype (`cpu_choice`), chosen when the weights are made; off a
        # CPU only its (ignored) path is passed to the programs.
        self.cpu_choice = cpu_choice.CpuChoice(cpu_choice.DEFAULT_PATH, matmul_dtype or "")
        self.tokenizer, self.mesh = tokenizer, mesh
        self.max_batch, self.lanes = max_batch, lanes
        self.max_length = max_length or cfg.max_position_embeddings
        self.prefill_chunk, self.min_prompt_bucket = prefill_chunk, min_prompt_bucket
        self.last_stats = RunStats()
        # the reusable KV-cache buffers (one a lane), shared by with_max_batch
        self._cache_box, self._lane_boxes = [None], []

    @classmethod
    def load(cls, model: str, *, dtype: str = "bfloat16", mesh=None, **kw) -> "Sampler":
        """Load model `M` (HF dir, .gguf, checkpoint, embedded name). bf16 by default: bf16 weights
        and activations with f32 accumulation is the fast recipe for sampling; pass
        dtype="float32" for exact f32 log-probs."""
        m = load_pretrained(model, dtype=dtype, param_dtype=dtype, mesh=mesh)
        return cls(m.cfg, m.params, m.tokenizer, mesh=mesh, **kw)

    def with_params(self, params) -> "Sampler":
        """The same sampler on new params (e.g. after a training phase); compiled programs are
        shared (jit caches them process-wide)."""
        return Sampler(self.cfg, params, self.tokenizer, mesh=self.mesh, max_batch=self.max_batch,
                       max_length=self.max_length, prefill_chunk=self.prefill_chunk,
                       min_prompt_bucket=self.min_prompt_bucket, matmul_dtype=self.matmul_dtype,
                       prompt_buckets=self.prompt_buckets, continuous=self.continuous,
                       check_every=self.check_every, narrow=self.narrow, lanes=self.lanes)

    def with_max_batch(self, max_batch: int) -> "Sampler":
        """The same sampler decoding up to `max_batch` rows a call (e.g. an evaluation set in one
        batch). It shares this one's prepared weights where the row count does not change their
        choice (on a CPU: `cpu_choice.same_regime`) and its KV-cache buffer, so the two never hold
        two buffers."""
        if max_batch == self.max_batch:
            return self
        other = self.with_params(self.params)
        other.max_batch, other._cache_box, other._lane_boxes = max_batch, self._cache_box, self._lane_boxes
        if self._platform() != "cpu" or cpu_choice.same_regime(self.max_batch, max_batch):
            other._weights, other.cpu_choice = self.weights, self.cpu_choice
        return other

    @property
    def weights(self):
        """The decode weights (`decode.prepare_weights`), made once from `params` and kept: they
        hold a copy of the matrices in `matmul_dtype`. Delete `params` yourself if you no longer
        need them."""
        if self._weights is None:
            platform = self._platform()
            if platform == "cpu":
                self.cpu_choice = cpu_choice.choose(self.cfg, self.max_batch, self.matmul_dtype)
            mm = self.cpu_choice.matmul_dtype if platform == "cpu" else self.matmul_dtype
            with _mesh_ctx(self.mesh):
                self._weights = prepare_weights(self.params, cfg=self.cfg, matmul_dtype=mm,
                                                embedding_bits=platform == "cpu")
            if platform == "cpu" and self.mesh is None:
                self.cpu_choice = cpu_choice.choose_scores(self.cfg, self._weights, self.max_batch, self.cpu_choice)
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
            return chat_prompt(tok, prompt) if chat else prompt
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
            ids = stop_token_ids(self.tokenizer)
            if ids:
                return tuple(ids)
        eos = self.cfg.eos_token_id
        return tuple(eos) if isinstance(eos, tuple) else (() if eos is None else (eos,))

    # ---------------------------------------------------------------- generate
    def generate(self, prompts: Sequence[str | Sequence[dict]], sampling: SamplingParams | None = None,
                 *, chat: bool = True, truncate: bool = False, progress: bool | None = None,
                 first_index: int = 0, bar: Any = None, **overrides) -> list[list[Completion]]:
        """Completions for each prompt: a str, or a list of {"role", "content"} messages.

        `overrides` are SamplingParams fields (e.g. temperature=0.8, n=4). Returns, per prompt in
        input order, a list of n Completions. `first_index` is the index of prompts[0] in a longer
        list this call is a slice of: sample j of prompt i draws the random stream of global sample
        (first_index + i) * n + j, so generating a list in slices gives the same completions as
        generating it whole (what lets a killed stage resume mid-sampling). `bar`: an open tqdm bar
        that this call advances from its current count instead of making its own (a caller that
        samples a long list in slices keeps one bar that moves during each slice); not closed."""
        if isinstance(prompts, (str, dict)):
            raise JaxevoError("generate() takes a list of prompts")
        return self.generate_ids(self.encode(prompts, chat), sampling, truncate=truncate,
                                 progress=progress, first_index=first_index, bar=bar, **overrides)

    def generate_ids(self, prompt_ids: Sequence[Sequence[int]], sampling: SamplingParams | None = None,
                     *, truncate: bool = False, progress: bool | None = None, first_index: int = 0,
                     bar: Any = None, **overrides) -> list[list[Completion]]:
        """Like `generate`, from token ids (no template, no special tokens added)."""
        sp = dataclasses.replace(sampling or SamplingParams(), **overrides)
        ids, cut = self._fit(prompt_ids, sp.max_new_tokens, truncate)
        stop_ids = tuple(sp.stop_token_ids) if sp.stop_token_ids is not None else self.default_stop_ids()
        if len(stop_ids) > MAX_STOP_IDS:
            raise ConfigError(f"at most {MAX_STOP_IDS} stop token ids (got {len(stop_ids)})")
        order = sorted(range(len(ids)), key=lambda i: (-len(ids[i]), i))
        rows = [(p, s) for p in order for s in range(sp.n)]
        results: list[list[Completion | None]] = [[None] * sp.n for _ in ids]
        stats = RunStats(prompts=len(ids), truncated_prompts=sum(1 for c in cut if c))
        show = bar is not None or (progress if progress is not None else len(rows) > self.max_batch)
        own_bar = bar is None
        bar = progress_bar(len(rows), show) if own_bar else bar
        base = bar.n if not own_bar else 0  # rows the caller's bar already counts
        look = self.check_every if (show or sp.stop or sp.stop_after) else None
        t_start, partials = time.perf_counter(), {}  # lane -> its running rows' tokens
        try:
            for lane, (out, done, active) in self._decode(ids, rows, sp, stop_ids, first_index, stats, look):
                for r, (p, s) in done:
                    results[p][s] = self._completion(out, r, p, s, len(ids[p]), cut[p], sp)
                    stats.new_tokens += int(out.lengths[r])
                stats.completions += len(done)
                # rows in flight count by the share of their token budget used: the bar moves
                # every `check_every` steps, not only when a whole batch ends
                partials[lane] = sum(int(out.lengths[r]) for r in active)
                partial = sum(partials.values())
                bar.n = round(base + stats.completions + partial / sp.max_new_tokens, 1)
                bar.set_postfix(tok_s=f"{(stats.new_tokens + partial) / (time.perf_counter() - t_start):.0f}")
        finally:
            if own_bar:
                bar.close()
        stats.seconds = time.perf_counter() - t_start
        self.last_stats = stats
        return results  # type: ignore[return-value]

    # ---------------------------------------------------------------- internals
    def _platform(self) -> str:
        return (self.mesh.devices.flat[0] if self.mesh is not None else jax.devices()[0]).platform

    def _batch_shards(self) -> int:
        return 1 if self.mesh is None else self.mesh.shape["data"] * self.mesh.shape["fsdp"]

    def _fit(self, prompt_ids, max_new: int, truncate: bool):
        room = self.max_length - max_new
        ids, cut = [], []
        for i, p in enumerate(prompt_ids):
            p = [int(t) for t in p]
            if not p:
                raise JaxevoError(f"prompt {i} is empty (0 tokens)")
            if len(p) > room:
                if room < 1:  # truncating cannot help: no token of any prompt fits
                    raise JaxevoError(
                        f"max_new_tokens {max_new} leaves no room for a prompt in max_length "
                        f"{self.max_length}: lower max_new_tokens (--max-new-tokens) or raise "
                        f"max_length (--max-length)")
                if not truncate:
                    raise JaxevoError(
                        f"prompt {i} has {len(p)} tokens but only {room} fit: max_length "
                        f"{self.max_length} - max_new_tokens {max_new}; shorten it, lower "
                        f"max_new_tokens, or truncate (--truncate; truncate=True in the API) to "
                        f"keep its last {room} tokens")
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

    def _pools(self, ids, rows, max_rows: int):
        """[(prompt slots T, [(prompt, sample), ...]), ...]: the rows decoded in one cache buffer.
        Batch at a time: `max_rows` rows each, T fitting the longest. Continuous: rows come longest
        first, and a new pool starts only where at least `max_batch` remaining rows fit half of T:
        each pool ends with a drain (rows finish, none come in), which costs more than attending
        over up to 2x padded prompt slots (docs/benchmarks.md)."""
        if not self.continuous:
            groups = [rows[g:g + max_rows] for g in range(0, len(rows), max_rows)]
            return [(self._prompt_bucket(max(len(ids[p]) for p, _ in g)), g) for g in groups]
        pools: list[tuple[int, list]] = []
        for i, (p, smp) in enumerate(rows):
            t = self._prompt_bucket(len(ids[p]))
            if not pools or (2 * t <= pools[-1][0] and len(rows) - i >= self.max_batch):
                pools.append((t, []))
            pools[-1][1].append((p, smp))
        return pools

    def _decode(self, ids, rows, sp: SamplingParams, stop_ids, first_index: int, stats: RunStats,
                look: int | None):
        """Decode `rows` [(prompt, sample)]; yields (lane, (host loop.Output, [(row, (prompt,
        sample))] finished, [rows still running])) each time rows finish in a lane, or every `look`
        decode steps (when not None: rows whose text hits a stop string or end-of-answer pattern
        are ended then)."""
        n = self.lanes or lane_count(self._platform(), self.mesh, len(rows), self.max_batch, self.continuous)
        per = max(-(-self.max_batch // n), self._batch_shards())  # a lane's rows: batches padded to <= per
        pools = self._pools(ids, rows, per)
        args = (ids, sp, stop_ids, first_index, look)
        if n == 1 or len(pools) == 1:
            yield from ((0, item) for item in self._decode_pools(pools, *args, stats, self._cache_box, per))
            return
        take, lane_stats = shared(pools), [RunStats() for _ in range(n)]
        _ = self.weights  # made (and the CPU path chosen) here, before the lanes start
        self._lane_boxes.extend([None] for _ in range(n - 1 - len(self._lane_boxes)))
        try:
            yield from interleave([self._decode_pools(take(), *args, st, box, per) for st, box in
                                   zip(lane_stats, [self._cache_box] + self._lane_boxes[:n - 1])])
        finally:
            for st in lane_stats:
                stats.add(st)

    def _decode_pools(self, pools, ids, sp: SamplingParams, stop_ids, first_index: int,
                      look: int | None, stats: RunStats, box: list, max_rows: int):
        """`_decode`'s items for `pools`, decoded one by one in `box`'s cache, batches of <= `max_rows` rows."""
        cfg, shard, mesh = self.cfg, self._batch_shards(), self.mesh
        m = length_bucket(sp.max_new_tokens, minimum=8, chunk=1 << 30)
        mode, knobs = sp.mode(cfg.vocab_size), sp.knobs()
        stop_arr = jnp.asarray(list(stop_ids) + [-1] * (MAX_STOP_IDS - len(stop_ids)), jnp.int32)
        key = jax.random.key(sp.seed)
        for t, queue in pools:
            nb = batch_bucket(min(len(queue), max_rows), shard, max_rows)
            # Measured on CPUs only; growing briefly holds two buffers, which an accelerator whose
            # batch was sized to its memory may not have room for.
            sizes = cache_segments(t, m) if not self.continuous and self._platform() == "cpu" else [t + m]
            cache = self._take_cache(nb, sizes[0], box)
            with _mesh_ctx(mesh):
                state = loop.empty_state(nb, m, t + m, cfg=cfg, mode=mode)
            # a refill costs a prefill pass over the weights: batch them
            refill_at = max(1, nb // 8) if self.continuous else nb
            owner: list = [None] * nb
            q, out, narrow = 0, None, self.narrow
            while True:
                free = [r for r in range(nb) if owner[r] is None]
                # refill only in batches (a refill is a prefill pass), also between two looks
                if q < len(queue) and free and (len(free) == nb or len(free) >= min(refill_at, len(queue) - q)):
                    take = queue[q:q + len(free)]
                    q += len(take)
                    t0 = time.perf_counter()
                    cache, state = self._start(cache, state, ids, take, free, t, sp, stop_arr, key, mode,
                                               knobs, first_index, stats)
                    if stats.batches == 0:
                        jax.block_until_ready(state.step)
                        stats.prefill_seconds += time.perf_counter() - t0
                    for r, row in zip(free, take):
                        owner[r] = row
                    stats.batches += 1
                if all(o is None for o in owner):
                    break
                if narrow and out is not None and sp.max_new_tokens - int(out.lengths.max()) >= NARROW_MIN_STEPS:
                    cache, state, owner = self._narrowed(cache, state, owner, stats)
                    narrow = nb == len(owner)  # once a pool
                    nb = len(owner)
                with _mesh_ctx(mesh):
                    cache, state, steps = loop.run(
                        self.weights, cache, state, stop_arr, knobs,
                        jnp.int32(refill_at if q < len(queue) else nb), jnp.int32(look or 1 << 30),
                        cfg=cfg, mode=mode, mesh=mesh, lockstep=not self.continuous,
                        scores=self.cpu_choice.scores, cpu_path=self.cpu_choice.path)
                stats.decode_steps += int(steps)
                out = _to_host(loop.output(state))
                if look and (sp.stop or sp.stop_after):
                    out, state = self._end_stopped(out, state, owner, sp)
                # an owned row is done exactly when it has a finish code (free rows keep NOT_RUN)
                finished = [(r, owner[r]) for r in range(nb)
                            if owner[r] is not None and out.finish[r] != loop.NOT_RUN]
                for r, _ in finished:
                    owner[r] = None
                room = cache.v[0].shape[2]
                if room < t + m and any(o is not None for o in owner) and t + int(out.lengths.max()) - 1 >= room:
                    with _mesh_ctx(mesh):  # the next write does not fit: the buffer's next segment
                        cache = loop.grow(cache, slots=sizes[sizes.index(room) + 1], cfg=cfg, mesh=mesh)
                yield out, finished, [r for r in range(nb) if owner[r] is not None]
            box[0] = cache

    def _narrowed(self, cache, state, owner, stats: RunStats):
        """(cache, state, owner) of the batch cut to the bucket of a NARROW_SHARE-th of its rows
        (one size per batch size: fewer programs) when its running rows fit there (done rows pad
        it), else unchanged."""
        running = [r for r, o in enumerate(owner) if o is not None]
        shard = self._batch_shards()
        small = batch_bucket(-(-len(owner) // NARROW_SHARE), shard, self.max_batch)
        if small >= len(owner) or len(running) > small:
            return cache, state, owner
        spare = [r for r, o in enumerate(owner) if o is None]  # done (or never started) rows
        rows = np.asarray(running + spare[:small - len(running)], np.int32)
        with _mesh_ctx(self.mesh):
            cache, state = loop.take_rows(cache, state, self._put(rows), cfg=self.cfg, mesh=self.mesh)
        stats.narrowed += 1
        return cache, state, [owner[r] for r in running] + [None] * (small - len(running))

    def _end_stopped(self, out, state, owner, sp: SamplingParams):
        """End the running rows whose text so far hits a stop string or an end-of-answer pattern
        (finish code STOP); returns the host output and the state with those rows done."""
        hit = [r for r, o in enumerate(owner) if o is not None and out.finish[r] == loop.NOT_RUN
               and stop_hit(self._decode_text(out.tokens[r, :out.lengths[r]]), sp) is not None]
        if not hit:
            return out, state
        rows = np.zeros(len(owner), bool)
        rows[hit] = True
        with _mesh_ctx(self.mesh):
            state = loop.stop_rows(state, self._put(rows))
        finish = np.array(out.finish)
        finish[hit] = loop.STOP
        return out._replace(finish=finish), state

    def _take_cache(self, nb: int, s: int, box: list):
        """The reusable cache buffer of `box` if it has this shape, else a new one (the old one freed first)."""
        cache = box[0]
        if cache is None or cache.v[0].shape[0] != nb or cache.v[0].shape[2] != s:
            box[0] = cache = None
            cache = new_cache(self.cfg, nb, s, self.mesh)
        box[0] = None
        return cache

    def _start(self, cache, state, ids, take, free, t, sp, stop_arr, key, mode, knobs, first_index, stats):
        """Prefill the prompts of `take` [(prompt, sample)] and start them in rows `free`."""
        shard, nb = self._batch_shards(), state.done.shape[0]
        prompts = list(dict.fromkeys(p for p, _ in take))
        where = {p: j for j, p in enumerate(prompts)}
        pb = batch_bucket(len(prompts), shard, nb)
        rb = batch_bucket(len(take), shard, nb)
        tokens, valid = np.full((pb, t), loop.pad_id(self.cfg), np.int32), np.zeros((pb, t), bool)  # left-padded
        for j, p in enumerate(prompts):
            tokens[j, t - len(ids[p]):] = ids[p]
            valid[j, t - len(ids[p]):] = True
        dest = np.full(rb, nb, np.int32)  # nb: padding entry, dropped
        row_prompt, row_ids = np.zeros(rb, np.int32), np.zeros(rb, np.int32)
        for j, ((p, smp), r) in enumerate(zip(take, free)):
            dest[j], row_prompt[j], row_ids[j] = r, where[p], (first_index + p) * sp.n + smp
        stats.shapes.add((nb, pb, t, state.kv_valid.shape[1]))
        # the prefill's per-token work on real tokens, a shared prefix once (no mesh: rows are sharded)
        pack = prefill_pack(tokens, valid) if self.mesh is None and t <= self.prefill_chunk else None
        put = self._put
        with _mesh_ctx(self.mesh):
            return loop.start(self.weights, cache, state, put(tokens), put(valid), put(dest),
                              put(row_prompt), put(row_ids), put(np.full(rb, sp.max_new_tokens, np.int32)),
                              stop_arr, key, knobs, None if pack is None else tuple(map(put, pack)), cfg=self.cfg,
                              mode=mode, mesh=self.mesh, chunk=self.prefill_chunk, cpu_path=self.cpu_choice.path)

    def _prompt_bucket(self, length: int) -> int:
        if self.prompt_buckets:
            for b in self.prompt_buckets:
                if b >= length and (b <= self.prefill_chunk or b % self.prefill_chunk == 0):
                    return b
        return length_bucket(length, self.min_prompt_bucket, self.prefill_chunk)

    def _put(self, x: np.ndarray):  # rows sharded over the mesh's batch axes
        return jnp.asarray(x) if self.mesh is None else jax.device_put(x, rows_sharding(self.mesh, x.shape))

    def _completion(self, out, r, p, s, plen, cut, sp: SamplingParams) -> Completion:
        """Row r of `out` as a Completion; cut at its first stop string or end-of-answer match
        (the fewest tokens whose text holds it, so where the host noticed it does not matter)."""
        n = int(out.lengths[r])
        toks = [int(x) for x in out.tokens[r, :n]]
        lps = np.asarray(out.logprobs[r, :n], np.float32)
        finish = FINISH.get(int(out.finish[r]), "length")
        body = toks[:-1] if finish == "eos" else toks
        text = self._decode_text(body)
        if (sp.stop or sp.stop_after) and self.tokenizer is not None and stop_hit(text, sp) is not None:
            k = stop_prefix_len(self._decode_text, body, sp)
            head = self._decode_text(body[:k])
            toks, lps, text, finish = body[:k], lps[:k], head[:stop_hit(head, sp)], "stop"
        return Completion(text=text, token_ids=tuple(toks), token_logprobs=lps,
                          logprob=float(np.sum(lps, dtype=np.float64)), finish_reason=finish,
                          prompt_index=p, sample_index=s, prompt_tokens=plen, truncated_tokens=cut)

    def _decode_text(self, ids) -> str:
        return "" if self.tokenizer is None else self.tokenizer.decode(ids, skip_special_tokens=True)


def generate(model: str | Sampler, prompts, sampling: SamplingParams | None = None, **kw):
    """One-shot helper: `generate("smollm2-135m-instruct", ["Hi"], temperature=0.8)`."""
    sampler = model if isinstance(model, Sampler) else Sampler.load(model)
    return sampler.generate(prompts, sampling, **kw)


# ------------------------------------------------------------------------------ helpers
def _mesh_ctx(mesh):
    return contextlib.nullcontext() if mesh is None else use_mesh(mesh)


def _to_host(out):
    if jax.process_count() > 1:
        out = multihost_utils.process_allgather(out, tiled=True)
    return jax.tree.map(np.asarray, jax.device_get(out))

