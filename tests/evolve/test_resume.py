"""A run killed after every stage in turn, and once in the middle of training, resumes to the same
data and the same final parameters as an uninterrupted run."""

import numpy as np
import pytest

from jaxevo.errors import ConfigError
from jaxevo.evolve.driver import run_evolve
from jaxevo.evolve.rundir import read_jsonl
from jaxevo.evolve.stages import ORDER, _Interrupted
from jaxevo.weights.safetensors_io import SafetensorsFile
from tests.evolve.conftest import recipe

# EVOLVE has every kind of stage: refinement chains, SFT and a preference phase (4 steps each).
EXTRA = ["run.rounds=1", "eval.before=false", "sft.batch_size=2", "preference.batch_size=2",
         "sft.checkpoint.every=1"]


def _params(run_dir):
    f = SafetensorsFile(run_dir / "final_model" / "model.safetensors")
    return {k: np.asarray(f.get(k)) for k in f.keys()}


def test_killed_after_each_stage_and_mid_training_resumes_identically(tmp_path, tiny_model):
    cfg, raw = recipe("evolve", tmp_path / "straight", tiny_model, *EXTRA)
    run_evolve(cfg, raw)

    cfg_k, raw_k = recipe("evolve", tmp_path / "killed", tiny_model, *EXTRA)
    for stage in ORDER[: ORDER.index("data") + 1]:
        m = run_evolve(cfg_k, raw_k, stop_after=(1, stage))
        assert list(m["rounds"]["1"]["stages"])[-1] == stage
    with pytest.raises(_Interrupted):  # killed after SFT step 1 of several
        run_evolve(cfg_k, raw_k, stop_at_step=1)
    partial = tmp_path / "killed" / "round_001" / "07_sft.partial" / "train" / "checkpoints"
    assert partial.is_dir() and any(partial.iterdir())
    for stage in ORDER[ORDER.index("sft"):]:
        run_evolve(cfg_k, raw_k, stop_after=(1, stage))
    m = run_evolve(cfg_k, raw_k)
    assert m["rounds"]["1"]["done"]

    a, b = tmp_path / "straight" / "round_001", tmp_path / "killed" / "round_001"
    for f in ("06_data/sft.jsonl", "06_data/pairs.jsonl", "05_score/scored.jsonl"):
        assert read_jsonl(a / f) == read_jsonl(b / f), f
    pa, pb = _params(tmp_path / "straight"), _params(tmp_path / "killed")
    assert pa.keys() == pb.keys()
    for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)


def test_changed_config_refuses_to_resume(tmp_path, tiny_model):
    cfg, raw = recipe("demo", tmp_path / "run", tiny_model, "run.rounds=1")
    run_evolve(cfg, raw, stop_after=(1, "prompts"))
    cfg2, raw2 = recipe("demo", tmp_path / "run", tiny_model, "run.rounds=1", "sample.temperature=0.5")
    with pytest.raises(ConfigError, match=r"sample.temperature: 0.8 -> 0.5"):
        run_evolve(cfg2, raw2)
    # More rounds is a resume-safe change.
    cfg3, raw3 = recipe("demo", tmp_path / "run", tiny_model, "run.rounds=2")
    run_evolve(cfg3, raw3, stop_after=(1, "generate"))
