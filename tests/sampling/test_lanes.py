"""Decode lanes (`lanes.py`): batches decoded by concurrent host threads write exactly what the
same batches write one after the other (f32 tiny models), and the lanes' plumbing hands items,
exceptions and early stops across threads."""

from __future__ import annotations

import os
import threading

import pytest

from jaxevo.errors import ConfigError
from jaxevo.sampling import Sampler, SamplingParams
from jaxevo.sampling.lanes import interleave, lane_count, shared
from tests.sampling.helpers import MIXED_PROMPTS as PROMPTS
from tests.sampling.helpers import MIXED_STOPS as STOPS
from tests.sampling.helpers import assert_same_completions as _same
from tests.sampling.helpers import byte_tokenizer, tiny


@pytest.mark.parametrize("knobs", [dict(temperature=0.9), dict(temperature=0.0)], ids=["sample", "greedy"])
def test_two_lanes_write_what_one_lane_writes(knobs, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)  # the default rule as on a 2-core machine
    cfg, params = tiny("llama3")
    sp = SamplingParams(max_new_tokens=24, n=3, seed=11, stop_token_ids=STOPS, **knobs)
    ref = Sampler(cfg, params, max_batch=4, lanes=1)  # batches of 4, one after the other
    two = Sampler(cfg, params, max_batch=8)  # a CPU, 33 rows > 8: two lanes of batches of 4
    a, b = ref.generate_ids(PROMPTS, sp, first_index=2), two.generate_ids(PROMPTS, sp, first_index=2)
    _same(a, b)
    assert {sh[0] for sh in two.last_stats.shapes} == {sh[0] for sh in ref.last_stats.shapes} == {4, 1}
    for f in ("completions", "new_tokens", "batches", "decode_steps"):
        assert getattr(two.last_stats, f) == getattr(ref.last_stats, f), f
    assert two.last_stats.batches == 9  # 33 rows in batches of 4, every one counted once
    # a second call reuses both lanes' cache buffers and writes the same again
    _same(b, two.generate_ids(PROMPTS, sp, first_index=2))


def test_a_lane_pads_its_batches_to_its_share_of_max_batch_only():
    # max_batch 6 in two lanes: batches of 3 rows, not 3 rows padded to the power of two 4 (at
    # max_batch 96 that padding made each lane decode 64 rows for 48, 26-43% slower than one lane)
    cfg, params = tiny("llama3")
    sp = SamplingParams(max_new_tokens=16, n=3, seed=5, temperature=0.9, stop_token_ids=STOPS)
    ref = Sampler(cfg, params, max_batch=3, lanes=1)
    two = Sampler(cfg, params, max_batch=6, lanes=2)
    _same(ref.generate_ids(PROMPTS, sp), two.generate_ids(PROMPTS, sp))
    assert {sh[0] for sh in two.last_stats.shapes} == {sh[0] for sh in ref.last_stats.shapes} == {3}
    assert {sh[1] for sh in two.last_stats.shapes} == {1}  # a batch's prompt rows: one prompt's 3 samples


def test_lanes_with_text_stops_and_a_run_that_fits_one_batch():
    cfg, params = tiny("llama3")
    tok = byte_tokenizer()
    prompts = ["hello there", "a much longer prompt about nothing at all, really", "x"]
    sp = SamplingParams(max_new_tokens=24, temperature=0.8, n=2, seed=3, stop=tuple("aeiou"), stop_token_ids=STOPS)
    ref = Sampler(cfg, params, tok, max_batch=2, lanes=1).generate(prompts, sp, first_index=5)
    out = Sampler(cfg, params, tok, max_batch=4, lanes=2).generate(prompts, sp, first_index=5)
    _same(ref, out)
    assert any(c.finish_reason == "stop" for o in out for c in o)
    whole = Sampler(cfg, params, tok, max_batch=8)
    whole.generate(prompts, sp)  # 6 rows fit one batch of 8: kept whole, one lane
    assert whole.last_stats.batches == 1


def test_lane_count_rule(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert lane_count("cpu", None, rows=65, max_batch=64, continuous=False) == 2
    assert lane_count("cpu", None, rows=64, max_batch=64, continuous=False) == 1  # one batch
    assert lane_count("gpu", None, rows=256, max_batch=64, continuous=False) == 1
    assert lane_count("cpu", object(), rows=256, max_batch=64, continuous=False) == 1  # a mesh
    assert lane_count("cpu", None, rows=256, max_batch=64, continuous=True) == 1
    assert lane_count("cpu", None, rows=256, max_batch=2, continuous=False) == 1  # batches too small to halve
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert lane_count("cpu", None, rows=256, max_batch=64, continuous=False) == 1  # one core: nothing to overlap


def test_bad_lanes_are_config_errors():
    cfg, params = tiny("llama3")
    with pytest.raises(ConfigError, match="lanes=0"):
        Sampler(cfg, params, lanes=0)
    with pytest.raises(ConfigError, match="continuous=False"):
        Sampler(cfg, params, lanes=2, continuous=True)


def test_interleave_runs_streams_at_once_the_second_after_the_firsts_first_item():
    # after its first item, each stream waits inside its next one for the other to get there: only
    # threads running at once get through
    ready = [threading.Event(), threading.Event()]
    first_out = threading.Event()
    started_after_first = []

    def stream(i):
        if i == 1:
            started_after_first.append(first_out.is_set())
        first_out.set()
        yield f"{i}0"
        ready[i].set()
        assert ready[1 - i].wait(timeout=10), "the lanes did not run at once"
        yield from (f"{i}{k}" for k in (1, 2))

    got = list(interleave([stream(0), stream(1)]))
    assert sorted(item for _, item in got) == ["00", "01", "02", "10", "11", "12"]
    assert all(item[0] == str(i) for i, item in got)
    for i in (0, 1):  # each stream's own items keep their order
        assert [item for j, item in got if j == i] == [f"{i}{k}" for k in range(3)]
    assert got[0] == (0, "00") and started_after_first == [True]  # the second lane waited for it


def test_interleave_raises_a_streams_error_and_stops_the_others():
    closed = threading.Event()

    def endless():
        try:
            while True:
                yield 1
        finally:
            closed.set()

    def failing():
        yield 2
        raise ValueError("lane broke")

    with pytest.raises(ValueError, match="lane broke"):
        for _ in interleave([endless(), failing()]):
            pass
    assert closed.is_set()  # the other lane's generator was closed (its cache handed back)
    assert not any(t.name.startswith("jaxevo-lane") for t in threading.enumerate())


def test_shared_hands_each_item_to_one_taker():
    take = shared(list(range(100)))
    got: list[list[int]] = [[], []]

    def work(i):
        got[i].extend(take())

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got[0] + got[1]) == list(range(100))
