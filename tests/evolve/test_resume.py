"""A run killed after every stage in turn, and once in the middle of training, resumes to the same
data and the same final parameters as an uninterrupted run."""

import numpy as np
import pytest

from jaxevo.errors import ConfigError
from jaxevo.evolve.driver import run_evolve
from jaxevo.evolve.rundir import read_jsonl
from jaxevo.evolve.stages.training import Interrupted
from jaxevo.weights.safetensors_io import SafetensorsFile
from tests.evolve.conftest import recipe

# EVOLVE has every kind of stage: refinement chains, SFT and a preference phase (4 steps each).
# Rule-chosen pairs: a random model is never verifiably right, so score-chosen pairs would be none.
EXTRA = ["run.rounds=1", "eval.before=false", "sft.batch_size=2", "preference.batch_size=2",
         "sft.checkpoint.every=1", "select.pairs=rule", "select.min_margin=0.0"]


def _params(run_dir):
    f = SafetensorsFile(run_dir / "final_model" / "model.safetensors")
    return {k: np.asarray(f.get(k)) for k in f.keys()}


def test_killed_after_each_stage_and_mid_training_resumes_identically(tmp_path, tiny_model):
    cfg, raw = recipe("evolve", tmp_path / "straight", tiny_model, *EXTRA)
    run_evolve(cfg, raw)

    cfg_k, raw_k = recipe("evolve", tmp_path / "killed", tiny_model, *EXTRA)
    stages = list(cfg_k.stages)
    for stage in stages[: stages.index("data") + 1]:
        m = run_evolve(cfg_k, raw_k, stop_after=(1, stage))
        assert list(m["rounds"]["1"]["stages"])[-1] == stage
    with pytest.raises(Interrupted):  # killed after SFT step 1 of several
        run_evolve(cfg_k, raw_k, stop_at_step=1)
    partial = tmp_path / "killed" / "round_001" / "sft.partial" / "train" / "checkpoints"
    assert partial.is_dir() and any(partial.iterdir())
    for stage in stages[stages.index("sft"):]:
        run_evolve(cfg_k, raw_k, stop_after=(1, stage))
    m = run_evolve(cfg_k, raw_k)
    assert m["rounds"]["1"]["done"]

    a, b = tmp_path / "straight" / "round_001", tmp_path / "killed" / "round_001"
    for f in ("data/sft.jsonl", "data/pairs.jsonl", "score/scored.jsonl"):
        assert read_jsonl(a / f) == read_jsonl(b / f), f
    pa, pb = _params(tmp_path / "straight"), _params(tmp_path / "killed")
    assert pa.keys() == pb.keys()
    for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)


class Killed(Exception):
    pass


def test_killed_mid_sampling_resumes_from_the_journal(tmp_path, tiny_model, monkeypatch):
    """A stage killed between two sampling chunks keeps the finished chunk and samples only the
    rest on the rerun; the completions equal an uninterrupted run's."""
    from jaxevo.sampling.api import Sampler

    # f32 sampling: chunks pad to other lengths, and bf16 rounding differences flip a random
    # model's near-uniform samples.
    base = [*EXTRA, "model.sample_dtype=float32"]
    extra = [*base, "sample.journal_rows=4"]  # 6 prompts x 2 samples -> 3 chunks of 2 prompts
    cfg, raw = recipe("evolve", tmp_path / "straight", tiny_model, *base, "sample.journal_rows=0")
    run_evolve(cfg, raw, stop_after=(1, "generate"))

    calls, armed = [], [True]
    real = Sampler.generate

    def dies_on_second_chunk(self, prompts, *a, **kw):
        calls.append(kw.get("first_index", 0))
        if len(calls) == 2 and armed[0]:
            armed[0] = False
            raise Killed("killed mid-sampling")
        return real(self, prompts, *a, **kw)

    monkeypatch.setattr(Sampler, "generate", dies_on_second_chunk)
    cfg_k, raw_k = recipe("evolve", tmp_path / "killed", tiny_model, *extra)
    with pytest.raises(Killed):
        run_evolve(cfg_k, raw_k, stop_after=(1, "generate"))
    journal = tmp_path / "killed" / "round_001" / "generate.partial" / "samples_01.jsonl"
    assert len(journal.read_text().splitlines()) == 2  # the header and the first chunk
    with open(journal, "a") as f:
        f.write('{"start": 2, "completions": [[{"te')  # a line cut short by the kill is dropped
    calls.clear()
    run_evolve(cfg_k, raw_k, stop_after=(1, "generate"))
    assert calls == [2, 4]  # only the two missing chunks were sampled
    a = read_jsonl(tmp_path / "straight" / "round_001" / "generate" / "groups.jsonl")
    b = read_jsonl(tmp_path / "killed" / "round_001" / "generate" / "groups.jsonl")
    assert len(b) == 6
    for ga, gb in zip(a, b):  # same tokens; log-probs to float rounding
        ra, rb = ga.pop("responses"), gb.pop("responses")
        assert ga == gb and [r.pop("logp") for r in ra] == pytest.approx([r.pop("logp") for r in rb], rel=1e-4)
        assert ra == rb


def test_changed_config_refuses_to_resume(tmp_path, tiny_model):
    cfg, raw = recipe("demo", tmp_path / "run", tiny_model, "run.rounds=1")
    run_evolve(cfg, raw, stop_after=(1, "prompts"))
    cfg2, raw2 = recipe("demo", tmp_path / "run", tiny_model, "run.rounds=1", "sample.temperature=0.5")
    with pytest.raises(ConfigError, match=r"sample.temperature: 0.8 -> 0.5"):
        run_evolve(cfg2, raw2)
    # More rounds is a resume-safe change.
    cfg3, raw3 = recipe("demo", tmp_path / "run", tiny_model, "run.rounds=2")
    run_evolve(cfg3, raw3, stop_after=(1, "generate"))


def test_more_rounds_on_a_finished_run_export_the_new_final_model(tmp_path, tiny_model):
    """run.rounds is resume-safe: raising it on a finished run runs the new round and exports
    its model as final_model (not the old round's, which was already there)."""
    extra = ["sft.epochs=1", "sft.batch_size=4", "sft.micro_batch_size=2", "eval.before=false"]
    cfg, raw = recipe("demo", tmp_path / "run", tiny_model, *extra, "run.rounds=1")
    m = run_evolve(cfg, raw)
    first = _params(tmp_path / "run")
    assert m["final_model_from"] == m["rounds"]["1"]["model"]
    cfg, raw = recipe("demo", tmp_path / "run", tiny_model, *extra, "run.rounds=2")
    m = run_evolve(cfg, raw)
    assert m["final_model_from"] == m["rounds"]["2"]["model"] != m["rounds"]["1"]["model"]
    second = _params(tmp_path / "run")
    from jaxevo.weights.load import hf_dir_for

    f = SafetensorsFile(hf_dir_for(str(tmp_path / "run" / m["rounds"]["2"]["model"])) / "model.safetensors")
    assert any(not np.array_equal(first[k], second[k]) for k in first)
    for k in second:
        np.testing.assert_array_equal(second[k], np.asarray(f.get(k)), err_msg=k)


# SELF with every part that samples or writes data: the meta-skill round (model-written critiques),
# self-instructed prompts (from round 1 here), feedback, refinement, restart with every view.
SELF_EXTRA = ["run.rounds=1", "eval.before=false", "model.sample_dtype=float32", "eval.source.n=2",
              "prompts.per_round=4", "sft.epochs=1", "sft.batch_size=2", "rounds.gate.n=2",
              "meta.enabled=true", "meta.prompts=2", "meta.n=2", "meta.min_score=0.0", "meta.epochs=1",
              "meta.evaluate=false", "meta.critique.source=model", "meta.critique.max_new_tokens=8",
              "prompts.self_instruct.from_round=1", "prompts.self_instruct.max_new_tokens=8",
              "prompts.self_instruct.attempts=1"]


@pytest.mark.heavy  # about a minute on 2 cores
def test_self_killed_after_each_stage_resumes_identically(tmp_path, tiny_model):
    cfg, raw = recipe("self", tmp_path / "straight", tiny_model, *SELF_EXTRA)
    m = run_evolve(cfg, raw)
    assert m["rounds"]["0"]["stages"]["meta"]["model_critiques"] >= 0
    assert m["rounds"]["1"]["stages"]["prompts"]["requests"] == round(4 * cfg.prompts.self_instruct.oversample)

    cfg_k, raw_k = recipe("self", tmp_path / "killed", tiny_model, *SELF_EXTRA)
    m = run_evolve(cfg_k, raw_k, stop_after=(0, "meta"))
    assert list(m["rounds"]["0"]["stages"]) == ["meta"] and "1" not in m["rounds"]
    for stage in cfg_k.stages:
        m = run_evolve(cfg_k, raw_k, stop_after=(1, stage))
        assert list(m["rounds"]["1"]["stages"])[-1] == stage
    m = run_evolve(cfg_k, raw_k)
    assert m["rounds"]["1"]["done"]

    a, b = tmp_path / "straight", tmp_path / "killed"
    for f in ("round_000/meta/meta.jsonl", "round_001/prompts/prompts.jsonl", "round_001/score/scored.jsonl",
              "round_001/data/sft.jsonl"):
        assert read_jsonl(a / f) == read_jsonl(b / f), f
    pa, pb = _params(a), _params(b)
    assert pa.keys() == pb.keys()
    for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)
