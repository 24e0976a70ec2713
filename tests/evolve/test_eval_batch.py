"""`eval.batch_size`: a round's evaluation decodes its items in batches of that many rows, on the
weights the round's other sampling uses (`RoundContext.sampler(model, rows)`), with the same
answers as in batches of `sample.batch_size`."""

from __future__ import annotations

import json

import pytest

from jaxevo.config import to_dict
from jaxevo.errors import ConfigError
from jaxevo.evolve.config import EvolveConfig
from jaxevo.evolve.context import RoundContext
from jaxevo.evolve.rundir import RunDir
from tests.evolve.conftest import recipe


def _evaluate(tmp_path, tiny_model, name, *overrides):
    # f32 decoding: batch shapes change no rounding, so both batchings must give the same answers
    cfg, raw = recipe("grpo_quick", tmp_path / name, tiny_model, "sample.batch_size=4",
                      "model.sample_dtype=float32", *overrides)
    run = RunDir(cfg.run.dir, raw, defaults=to_dict(EvolveConfig())).open()
    ctx = RoundContext(cfg, run, 0, None)
    summary = ctx.evaluate(tiny_model, tmp_path / name / "eval")
    rows = [json.loads(x) for x in (tmp_path / name / "eval" / "results.jsonl").read_text().splitlines()]
    return ctx, summary, rows


def test_evaluation_decodes_in_eval_batch_size_rows(tmp_path, tiny_model):
    ctx, summary, rows = _evaluate(tmp_path, tiny_model, "one_batch", "eval.batch_size=8")
    sampler = ctx.sampler(tiny_model, 8)
    # 6 items in one batch of 8 rows (one set of compiled shapes), not batches of 4 and 2
    assert sampler.max_batch == 8
    assert {shape[0] for shape in sampler.last_stats.shapes} == {8}
    default = ctx.sampler(tiny_model)
    assert default.max_batch == 4
    assert default.weights is sampler.weights  # one prepared copy for both

    ctx2, summary2, rows2 = _evaluate(tmp_path, tiny_model, "default", "eval.batch_size=null")
    s2 = ctx2.sampler(tiny_model)
    # 6 rows > 4: on a CPU, two lanes of batches of 2 (`sampling/lanes.py`)
    assert {shape[0] for shape in s2.last_stats.shapes} == {2}
    assert [r["completion"] for r in rows2] == [r["completion"] for r in rows]
    assert summary2["accuracy"] == summary["accuracy"] and len(rows) == 6


def test_eval_batch_size_must_be_positive(tmp_path, tiny_model):
    with pytest.raises(ConfigError, match="eval.batch_size=0"):
        recipe("grpo_quick", tmp_path / "bad", tiny_model, "eval.batch_size=0")
