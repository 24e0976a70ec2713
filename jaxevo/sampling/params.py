"""The sampler's value types: how to sample (`SamplingParams`), what comes back (`Completion`,
`RunStats`), and the bucket sizes that bound the number of compiled programs."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np

from jaxevo.errors import ConfigError
from jaxevo.sampling.processors import Knobs, Mode


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
    # End-of-answer patterns (regular expressions): a row ends once its text matches one, and the
    # text is kept up to the match's end (unlike `stop`, whose string is cut off). Checked on the
    # host every few decode steps, so finished rows stop paying for tokens.
    stop_after: tuple[str, ...] = ()

    def __post_init__(self):
        for name in ("stop", "stop_after"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))
        for pattern in self.stop_after:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ConfigError(f"SamplingParams: stop_after pattern {pattern!r} is not a valid "
                                  f"regular expression ({e})") from None
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
            (all(self.stop_after), "stop_after patterns must be non-empty"),
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
    batches: int = 0  # `loop.start` calls: batches (batch at a time) or refills (continuous)
    seconds: float = 0.0
    prefill_seconds: float = 0.0
    shapes: set = dataclasses.field(default_factory=set)  # distinct (N, P, T, S) compiled shapes
    truncated_prompts: int = 0
    decode_steps: int = 0  # forward passes of the whole batch after prefill
    narrowed: int = 0  # batches narrowed to their running rows (`Sampler`, batch at a time)

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


def packed_rows(real: int, total: int, parts: int = 4) -> int:
    """The rows a prefill of `total` padded prompt tokens, `real` of them real, runs its per-token
    work on (`loop.prefill`'s packed): the next multiple of total / parts, so that a prompt shape
    has at most `parts` programs; 0 (no packing) when that is all of them."""
    if total % parts:
        return 0
    rows = -(-real // (total // parts)) * (total // parts)
    return rows if rows < total else 0


def cache_segments(t: int, m: int, smallest: int = 32, most: int = 4) -> list[int]:
    """The slot counts a lockstep batch's cache buffer grows through, for T prompt slots and M
    new tokens: up to `most` equal segments of >= `smallest` slots (a multiple of 16), the last
    T + M. A decode step reads the whole buffer, so fewer slots early pay for the extra programs
    (one `run` per size) once the compilation cache holds them."""
    if m < 2 * smallest:
        return [t + m]
    step = max(smallest, -(-m // (16 * most)) * 16)  # ceil(m / most), rounded up to 16
    return [t + min(m, k * step) for k in range(1, -(-m // step) + 1)]


def batch_bucket(x: int, multiple: int = 1, maximum: int | None = None) -> int:
    """Next power of two >= x, a multiple of `multiple` (the batch shard count), capped at the
    `maximum` batch rounded up to that multiple."""
    b = 1 << max(0, math.ceil(math.log2(max(x, 1))))
    b = -(-max(b, multiple) // multiple) * multiple
    if maximum is not None:
        b = min(b, -(-maximum // multiple) * multiple)
    return max(b, -(-x // multiple) * multiple)


def stop_hit(text: str, sp: SamplingParams) -> int | None:
    """Where `text` is cut: before its first stop string or after its first end-of-answer match
    (the earlier of the two); None when neither occurs."""
    hits = [i for i in (text.find(s) for s in sp.stop) if i >= 0]
    hits += [m.end() for m in (re.search(p, text) for p in sp.stop_after) if m is not None]
    return min(hits) if hits else None


def stop_prefix_len(decode, ids, sp: SamplingParams) -> int:
    """Fewest leading tokens whose text contains a stop string or an end-of-answer match
    (binary search)."""
    lo, hi = 1, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if stop_hit(decode(ids[:mid]), sp) is not None:
            hi = mid
        else:
            lo = mid + 1
    return hi
