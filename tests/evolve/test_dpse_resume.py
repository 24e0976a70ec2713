"""DPSE killed after each of its stages (its log and expansion stages included) resumes to the
same scores, generated prompts and training data as an uninterrupted run."""

from jaxevo.evolve.driver import run_evolve
from jaxevo.evolve.rundir import read_jsonl
from tests.evolve.conftest import recipe

# The sampling and data stages only (training resumes are test_resume.py's, stage by stage).
EXTRA = ["run.rounds=1", "eval.before=false", "stages=[prompts,generate,logged,score,expand,data]",
         "prompts.source.n=4", "prompts.source.history=session", "censor.expand_per_topic=2",
         "censor.expand_variants=2", "censor.expand_min_score=0.0", "select.min_margin=0.0"]


def test_dpse_killed_after_each_stage_resumes_identically(tmp_path, tiny_model):
    cfg, raw = recipe("dpse", tmp_path / "straight", tiny_model, *EXTRA)
    m = run_evolve(cfg, raw)
    assert m["rounds"]["1"]["stages"]["expand"]["generated"] >= 2  # the variants at least

    cfg_k, raw_k = recipe("dpse", tmp_path / "killed", tiny_model, *EXTRA)
    for stage in cfg_k.stages:
        m = run_evolve(cfg_k, raw_k, stop_after=(1, stage))
        assert list(m["rounds"]["1"]["stages"])[-1] == stage
    m = run_evolve(cfg_k, raw_k)
    assert m["rounds"]["1"]["done"]
    a, b = tmp_path / "straight" / "round_001", tmp_path / "killed" / "round_001"
    for f in ("logged/groups.jsonl", "score/scored.jsonl", "expand/scored.jsonl", "data/sft.jsonl",
              "data/pairs.jsonl"):
        assert read_jsonl(a / f) == read_jsonl(b / f), f
