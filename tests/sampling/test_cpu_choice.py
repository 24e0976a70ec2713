"""The per-machine choice of the CPU dot path, decode-weight dtype and attention-score form
(`sampling/cpu_choice.py`):
measured once and cached, overridable, and the same completions whichever candidate wins."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxevo import cpu_store
from jaxevo.errors import ConfigError
from jaxevo.models import decode
from jaxevo.sampling import Sampler, cpu_choice, loop, teacher_forced_logprobs
from tests.sampling.helpers import tiny
from tests.sampling.test_sampler import PROMPTS


def test_measured_once_then_read_from_the_cache(cpu_store_file):
    cfg, _ = tiny("llama3", dtype="bfloat16")
    first = cpu_choice.choose(cfg, rows=64)
    assert first.source == "measured"
    times = dict(first.seconds)
    assert set(times) == {f"{p}:{d}" for p in cpu_choice.PATHS for d in ("bfloat16", "float32")}
    static = cpu_choice.static_choice(cfg)
    # the fastest wins, unless the static choice is within the margin
    assert first.path + ":" + first.matmul_dtype == cpu_choice.pick_path(times, f"{static.path}:{static.matmul_dtype}")
    stored = json.loads(cpu_store_file.read_text())
    assert len(stored) == 1 and list(stored.values())[0]["path"] == first.path
    (noted,) = cpu_store.used().values()  # what a run records of the choice
    assert noted["what"] == f"sampler dots and weights (E{cfg.hidden_size} F{cfg.intermediate_size} bfloat16, 64 rows)"
    assert (noted["choice"], noted["source"]) == (f"{first.path}:{first.matmul_dtype}", "measured")

    cpu_store.forget()  # a new process: read, not measured again
    again = cpu_choice.choose(cfg, rows=64)
    assert (again.source, again.path, again.matmul_dtype) == ("cached", first.path, first.matmul_dtype)
    (noted_again,) = cpu_store.used().values()
    assert noted_again == dict(noted, source="cached")
    # Another row regime, or an explicit weight dtype, is its own measurement.
    assert cpu_choice.choose(cfg, rows=1).source == "measured"
    fixed = cpu_choice.choose(cfg, rows=64, matmul_dtype="float32")
    assert fixed.matmul_dtype == "float32" and {k.split(":")[1] for k, _ in fixed.seconds} == {"float32"}
    assert len(json.loads(cpu_store_file.read_text())) == 3


def test_a_damaged_cache_is_measured_again_and_rewritten(cpu_store_file):
    cpu_store_file.write_text("{not json")
    cfg, _ = tiny("llama3")  # f32 weights: only the path is chosen
    c = cpu_choice.choose(cfg, rows=64)
    assert c.source == "measured" and c.matmul_dtype == "float32" and len(c.seconds) == len(cpu_choice.PATHS)
    stored = json.loads(cpu_store_file.read_text())
    assert len(stored) == 1
    # An entry naming a path this version does not have (edited, or from another version): measured again.
    key = next(iter(stored))
    cpu_store_file.write_text(json.dumps({key: {"path": "onednn", "matmul_dtype": "float32"}}))
    cpu_store.forget()
    assert cpu_choice.choose(cfg, rows=64).source == "measured"
    assert json.loads(cpu_store_file.read_text())[key]["path"] in cpu_choice.PATHS


def test_the_environment_sets_the_choice(cpu_store_file, monkeypatch):
    cfg, _ = tiny("llama3", dtype="bfloat16")
    monkeypatch.setenv(cpu_choice.ENV, "xla:float32")
    assert cpu_choice.choose(cfg, 64) == cpu_choice.CpuChoice("xla", "float32", source="env")
    monkeypatch.setenv(cpu_choice.ENV, "ynnpack")  # no dtype: the compute dtype
    assert cpu_choice.choose(cfg, 64).matmul_dtype == "bfloat16"
    monkeypatch.setenv(cpu_choice.ENV, "xla:bfloat16:reduce")
    assert cpu_choice.choose(cfg, 64) == cpu_choice.CpuChoice("xla", "bfloat16", source="env", scores="reduce")
    s = Sampler(cfg, tiny("llama3", dtype="bfloat16")[1], max_batch=64)
    assert s.weights is not None and s.cpu_choice.scores == "reduce"  # not measured
    assert not cpu_store_file.exists()  # nothing measured
    assert {(e["choice"], e["source"]) for e in cpu_store.used().values()} == {
        ("xla:float32, scores dot", "env"), ("ynnpack:bfloat16, scores dot", "env"),
        ("xla:bfloat16, scores reduce", "env")}
    for bad in ("onednn:bfloat16", "xla:int8", "xla:bfloat16:fast"):
        monkeypatch.setenv(cpu_choice.ENV, bad)
        with pytest.raises(ConfigError, match=cpu_choice.ENV):
            cpu_choice.choose(cfg, 64)


def test_score_form_measured_on_decode_steps_once_then_cached(cpu_store_file):
    """A sampler of more than SMALL_ROWS rows times each attention-score form on real decode
    steps once, keeps the faster and reads it back in a new process; a small one times nothing."""
    cfg, params = tiny("llama3", dtype="bfloat16")
    s = Sampler(cfg, params, max_batch=64)
    assert s.weights is not None
    times = dict(s.cpu_choice.score_seconds)
    assert set(times) == set(decode.SCORES) and s.cpu_choice.scores == cpu_choice.pick_scores(times)
    entries = [v for k, v in json.loads(cpu_store_file.read_text()).items() if "|scores by median|" in k]
    assert len(entries) == 1 and entries[0]["scores"] == s.cpu_choice.scores
    noted = [e for e in cpu_store.used().values() if e["what"].startswith("attention scores")]
    assert [(e["choice"], e["source"], e["what"].endswith("64 rows)")) for e in noted] == [
        (s.cpu_choice.scores, "measured", True)]

    cpu_store.forget()
    again = Sampler(cfg, params, max_batch=64)
    assert again.weights is not None and again.cpu_choice.scores == s.cpu_choice.scores
    assert dict(again.cpu_choice.score_seconds) == times  # read back, not timed again
    small = Sampler(cfg, params, max_batch=8)
    assert small.weights is not None and (small.cpu_choice.scores, small.cpu_choice.score_seconds) == ("dot", ())
    noted = [(e["choice"], e["source"], e["what"].endswith("1 row)")) for e in cpu_store.used().values()
             if e["what"].startswith("attention scores")]
    assert noted == [(s.cpu_choice.scores, "cached", False), ("dot", "default", True)]


def test_path_near_tie_keeps_the_static_choice():
    """Another path or weight dtype wins only by more than PATH_MARGIN (20 % of the best times), so
    two probes of one machine that split a near-tie differently give runs the same sums."""
    assert cpu_choice.PATH_MARGIN == 0.2
    # two probes of one AVX2-only EPYC, an hour apart, where whole calls took the same time
    for times in ({"xla:float32": 0.0303, "ynnpack:float32": 0.0301, "ynnpack:bfloat16": 0.0298},
                  {"xla:float32": 0.0262, "ynnpack:float32": 0.0303, "ynnpack:bfloat16": 0.0287}):
        assert cpu_choice.pick_path(times, "ynnpack:float32") == "ynnpack:float32"
    # an EPYC with AVX512-BF16 at 64 rows (ms; docs/benchmarks.md: 11.9 against 16.4-18.6 for the
    # others): XLA's bf16 dots stay the choice
    times = {"xla:bfloat16": 11.9, "ynnpack:bfloat16": 16.4, "xla:float32": 18.6, "ynnpack:float32": 17.5}
    assert cpu_choice.pick_path(times, "ynnpack:bfloat16") == "xla:bfloat16"


def test_score_form_near_tie_keeps_the_default():
    """The other form wins only by more than SCORE_MARGIN (2 % of the median times): a tie timed
    either way on one machine gives every cpu_store_file cache the same form, so the same greedy
    completions."""
    assert decode.SCORES[0] == "dot" and cpu_choice.SCORE_MARGIN == 0.02
    assert cpu_choice.pick_scores({"dot": 0.0500, "reduce": 0.0499}) == "dot"
    assert cpu_choice.pick_scores({"dot": 0.0500, "reduce": 0.0491}) == "dot"   # 1.8 % faster
    assert cpu_choice.pick_scores({"dot": 0.0500, "reduce": 0.0489}) == "reduce"  # 2.2 % faster
    assert cpu_choice.pick_scores({"dot": 0.0400, "reduce": 0.0500}) == "dot"


def test_every_candidate_decodes_what_the_model_computes(cpu_store_file, monkeypatch):
    """Each (path, storage) candidate: the sampler compiles with that path's options, and its
    log-probs equal a teacher-forced pass of the model over its own tokens. bf16 compute: both
    storage dtypes give the same tokens; the two paths differ in summation order, which can flip
    a near-tie of this random model's logits, so their tokens are not compared. f32 compute: the
    two paths and both attention-score forms write the same tokens, log-probs within 1e-4."""
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
    # bf16-rounded weights stored as f32: the same products, summed in the same order on a CPU
    # without AMX (log-probs within 1e-6); with AMX, XLA's bf16 dot sums in another order, and the
    # bf16 rounding of the activations turns that into up to 4e-4 (measured) in the log-probs.
    for path in cpu_choice.PATHS:
        for a, b in zip(got[path, "bfloat16"], got[path, "float32"]):
            assert a[0].token_ids == b[0].token_ids
            np.testing.assert_allclose(a[0].token_logprobs, b[0].token_logprobs, atol=2e-3, rtol=0)

    cfg, params = tiny("llama3")
    tokens = {}
    for path in cpu_choice.PATHS:
        for scores in decode.SCORES:
            monkeypatch.setenv(cpu_choice.ENV, f"{path}:float32:{scores}")
            s = Sampler(cfg, params, max_batch=8)
            outs = s.generate_ids(PROMPTS, max_new_tokens=10, temperature=0, stop_token_ids=())
            assert s.cpu_choice.scores == scores
            tokens[path, scores] = [o[0].token_ids for o in outs]
            worst[path, scores] = max(np.abs(np.asarray(o[0].token_logprobs) - teacher_forced_logprobs(
                params, cfg, p, o[0].token_ids)).max() for p, o in zip(PROMPTS, outs))
    assert len({str(t) for t in tokens.values()}) == 1, tokens
    assert max(worst[k] for k in tokens) < 1e-4, worst
