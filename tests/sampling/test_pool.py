"""Continuous batching (`Sampler(continuous=True)`, loop.py) returns exactly what batch-at-a-time
decoding returns on these f32 models, whatever row of the pool a sample ran in and whenever it
started (in bf16 a different prompt padding can change float rounding)."""

from __future__ import annotations

import pytest

from jaxevo.sampling import Sampler, SamplingParams
from tests.sampling.helpers import MIXED_PROMPTS as PROMPTS
from tests.sampling.helpers import MIXED_STOPS as STOPS
from tests.sampling.helpers import assert_same_completions as _same
from tests.sampling.helpers import byte_tokenizer, tiny


@pytest.mark.parametrize("knobs", [dict(temperature=0.9), dict(temperature=0.0),
                                   dict(temperature=1.0, top_p=0.9, repetition_penalty=1.3)],
                         ids=["sample", "greedy", "top_p+penalty"])
def test_continuous_equals_batch_at_a_time(knobs):
    cfg, params = tiny("llama3")
    sp = SamplingParams(max_new_tokens=40, n=3, seed=11, stop_token_ids=STOPS, **knobs)
    ref = Sampler(cfg, params, max_batch=8).generate_ids(PROMPTS, sp)
    s = Sampler(cfg, params, max_batch=4, continuous=True)
    out = s.generate_ids(PROMPTS, sp)
    _same(ref, out)
    lengths = sorted(len(c.token_ids) for o in out for c in o)
    assert lengths[0] <= 15 and lengths[-1] == 40  # rows did finish at different steps...
    assert s.last_stats.batches > 2 * len(s.last_stats.shapes)  # ...and were refilled (starts > pools)
    assert s.last_stats.completions == len(PROMPTS) * 3
    assert s.last_stats.new_tokens == sum(lengths)


def test_continuous_with_text_stops_and_first_index():
    cfg, params = tiny("llama3")
    tok = byte_tokenizer()
    prompts = ["hello there", "a much longer prompt about nothing at all, really", "x"]
    sp = SamplingParams(max_new_tokens=24, temperature=0.8, n=2, seed=3, stop=tuple("aeiou"), stop_token_ids=STOPS)
    ref = Sampler(cfg, params, tok, max_batch=2).generate(prompts, sp, first_index=5)
    out = Sampler(cfg, params, tok, max_batch=2, continuous=True).generate(prompts, sp, first_index=5)
    _same(ref, out)
    assert any(c.finish_reason == "stop" for o in out for c in o)


def test_with_max_batch_shares_weights_and_one_cache_buffer():
    cfg, params = tiny("llama3")
    sp = SamplingParams(max_new_tokens=12, temperature=0.9, n=3, seed=2, stop_token_ids=STOPS)
    s = Sampler(cfg, params, max_batch=12, lanes=1)
    assert s.with_max_batch(12) is s
    big = s.with_max_batch(64)
    assert big.max_batch == 64 and big.weights is s.weights  # both above cpu_choice.SMALL_ROWS
    out = big.generate_ids(PROMPTS, sp)
    _same(Sampler(cfg, params, max_batch=64).generate_ids(PROMPTS, sp), out)
    assert {shape[0] for shape in big.last_stats.shapes} == {64}  # 33 rows in one batch
    assert s._cache_box is big._cache_box and s._cache_box[0].v[0].shape[0] == 64
    _same(Sampler(cfg, params, max_batch=12).generate_ids(PROMPTS, sp), s.generate_ids(PROMPTS, sp))
    assert big._cache_box[0].v[0].shape[0] == 12  # the 64-row buffer was let go, not kept beside it
    small = s.with_max_batch(2)  # at most SMALL_ROWS rows: its own choice, so its own weights
    assert small.weights is not s.weights
    _same(Sampler(cfg, params, max_batch=2).generate_ids(PROMPTS[:3], sp), small.generate_ids(PROMPTS[:3], sp))
