"""The per-machine choice of the CPU dot path and decode-weight dtype (`sampling/cpu_choice.py`):
measured once and cached, overridable, and the same completions whichever candidate wins."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxevo.errors import ConfigError
from jaxevo.sampling import Sampler, cpu_choice, loop, teacher_forced_logprobs
from tests.sampling.helpers import tiny
from tests.sampling.test_sampler import PROMPTS


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """An empty jaxevo cache and no remembered measurement."""
    monkeypatch.setenv("JAXEVO_CACHE", str(tmp_path))
    monkeypatch.delenv(cpu_choice.ENV, raising=False)
    cpu_choice._measured.cache_clear()
    yield tmp_path / "cpu_paths.json"
    cpu_choice._measured.cache_clear()


def test_measured_once_then_read_from_the_cache(fresh):
    cfg, _ = tiny("llama3", dtype="bfloat16")
    first = cpu_choice.choose(cfg, rows=64)
    assert first.source == "measured"
    times = dict(first.seconds)
    assert set(times) == {f"{p}:{d}" for p in cpu_choice.PATHS for d in ("bfloat16", "float32")}
    assert first.path + ":" + first.matmul_dtype == min(times, key=times.get)  # the fastest wins
    stored = json.loads(fresh.read_text())
    assert len(stored) == 1 and list(stored.values())[0]["path"] == first.path

    cpu_choice._measured.cache_clear()  # a new process: read, not measured again
    again = cpu_choice.choose(cfg, rows=64)
    assert (again.source, again.path, again.matmul_dtype) == ("cached", first.path, first.matmul_dtype)
    # Another row regime, or an explicit weight dtype, is its own measurement.
    assert cpu_choice.choose(cfg, rows=1).source == "measured"
    fixed = cpu_choice.choose(cfg, rows=64, matmul_dtype="float32")
    assert fixed.matmul_dtype == "float32" and {k.split(":")[1] for k, _ in fixed.seconds} == {"float32"}
    assert len(json.loads(fresh.read_text())) == 3


def test_a_damaged_cache_is_measured_again_and_rewritten(fresh):
    fresh.write_text("{not json")
    cfg, _ = tiny("llama3")  # f32 weights: only the path is chosen
    c = cpu_choice.choose(cfg, rows=64)
    assert c.source == "measured" and c.matmul_dtype == "float32" and len(c.seconds) == len(cpu_choice.PATHS)
    stored = json.loads(fresh.read_text())
    assert len(stored) == 1
    # An entry naming a path this version does not have (edited, or from another version): measured again.
    key = next(iter(stored))
    fresh.write_text(json.dumps({key: {"path": "onednn", "matmul_dtype": "float32"}}))
    cpu_choice._measured.cache_clear()
    assert cpu_choice.choose(cfg, rows=64).source == "measured"
    assert json.loads(fresh.read_text())[key]["path"] in cpu_choice.PATHS


def test_the_environment_sets_the_choice(fresh, monkeypatch):
    cfg, _ = tiny("llama3", dtype="bfloat16")
    monkeypatch.setenv(cpu_choice.ENV, "xla:float32")
    assert cpu_choice.choose(cfg, 64) == cpu_choice.CpuChoice("xla", "float32", source="env")
    monkeypatch.setenv(cpu_choice.ENV, "ynnpack")  # no dtype: the compute dtype
    assert cpu_choice.choose(cfg, 64).matmul_dtype == "bfloat16"
    assert not fresh.exists()  # nothing measured
    for bad in ("onednn:bfloat16", "xla:int8"):
        monkeypatch.setenv(cpu_choice.ENV, bad)
        with pytest.raises(ConfigError, match=cpu_choice.ENV):
            cpu_choice.choose(cfg, 64)


def test_every_candidate_decodes_what_the_model_computes(fresh, monkeypatch):
    """Each (path, storage) candidate: the sampler compiles with that path's options, and its
    log-probs equal a teacher-forced pass of the model over its own tokens. bf16 compute: both
    storage dtypes give the same completions; the two paths differ in summation order, which can
    flip a near-tie of this random model's logits, so their tokens are not compared. f32 compute:
    the two paths write the same tokens."""
    cfg, params = tiny("llama3", dtype="bfloat16")
    worst, got = {}, {}
    for path in cpu_choice.PATHS:
        for dtype in ("bfloat16", "float32"):
            monkeypatch.setenv(cpu_choice.ENV, f"{path}:{dtype}")
            s = Sampler(cfg, params, max_batch=8)
            outs = s.generate_ids(PROMPTS, max_new_tokens=10, temperature=0, stop_token_ids=())
            assert (s.cpu_choice.path, s.cpu_choice.matmul_dtype) == (path, dtype)
            assert s.weights["lm_head"].dtype == np.dtype(dtype)
            assert ("cpu", path) in loop.run.by_platform and ("cpu", path) in loop.start.by_platform
            got[path, dtype] = outs
            worst[path, dtype] = max(np.abs(np.asarray(o[0].token_logprobs) - teacher_forced_logprobs(
                params, cfg, p, o[0].token_ids)).max() for p, o in zip(PROMPTS, outs))
    assert max(worst.values()) < 0.01, worst  # measured: 0.002-0.003
    for path in cpu_choice.PATHS:  # bf16-rounded weights stored as f32: the same products
        for a, b in zip(got[path, "bfloat16"], got[path, "float32"]):
            assert a[0].token_ids == b[0].token_ids
            np.testing.assert_allclose(a[0].token_logprobs, b[0].token_logprobs, atol=1e-6, rtol=0)

    cfg, params = tiny("llama3")
    tokens = {}
    for path in cpu_choice.PATHS:
        monkeypatch.setenv(cpu_choice.ENV, path)
        outs = Sampler(cfg, params, max_batch=8).generate_ids(PROMPTS, max_new_tokens=10, temperature=0,
                                                              stop_token_ids=())
        tokens[path] = [o[0].token_ids for o in outs]
    assert tokens["xla"] == tokens["ynnpack"]
