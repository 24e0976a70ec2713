"""An evolve run that diverged in SFT resumes with a lower learning rate (recorded in the manifest)
and ends where a run started with that rate ends; a damaged config.yaml is a clean error."""

import json

import numpy as np
import pytest

from jaxevo.errors import ConfigError
from jaxevo.evolve.driver import run_evolve
from jaxevo.evolve.rundir import RunDir
from jaxevo.train.loop import TrainingDivergedError
from jaxevo.weights.safetensors_io import SafetensorsFile
from tests.evolve.conftest import recipe

EXTRA = ["run.rounds=1", "eval.before=false", "sft.batch_size=2", "select.pairs=rule",
         "select.min_margin=0.0"]


def _sft_params(run_dir):
    d = run_dir / "round_001" / "sft"
    info = json.loads((run_dir / "manifest.json").read_text())["rounds"]["1"]["stages"]["sft"]
    f = SafetensorsFile(d / info["model"] / "model" / "model.safetensors")
    return {k: np.asarray(f.get(k)) for k in f.keys()}


def test_diverged_sft_resumes_with_a_lower_lr(tmp_path, tiny_model):
    cfg, raw = recipe("evolve", tmp_path / "good", tiny_model, *EXTRA, "sft.optim.lr=1e-3")
    run_evolve(cfg, raw, stop_after=(1, "sft"))

    run = tmp_path / "diverged"
    cfg, raw = recipe("evolve", run, tiny_model, *EXTRA, "sft.optim.lr=1e30",
                      "sft.optim.clip_norm=null")
    with pytest.raises(TrainingDivergedError, match=r"Lower sft\.optim\.lr, enable sft\.optim\.clip_norm"):
        run_evolve(cfg, raw)
    # Not a resume-safe change everywhere: the sampling temperature still is refused.
    cfg_t, raw_t = recipe("evolve", run, tiny_model, *EXTRA, "sft.optim.lr=1e-3",
                          "sample.temperature=0.5")
    with pytest.raises(ConfigError, match=r"sample.temperature: 0.8 -> 0.5"):
        run_evolve(cfg_t, raw_t)
    cfg, raw = recipe("evolve", run, tiny_model, *EXTRA, "sft.optim.lr=1e-3")
    run_evolve(cfg, raw, stop_after=(1, "sft"))

    m = json.loads((run / "manifest.json").read_text())
    (change,) = m["config_changes"]
    assert change["changed"] == {"sft.optim.lr": [1e30, 1e-3], "sft.optim.clip_norm": [None, 1.0]}
    assert change["finished_before"] == ["1/prompts", "1/generate", "1/feedback", "1/refine",
                                         "1/score", "1/data"]
    a, b = _sft_params(tmp_path / "good"), _sft_params(run)
    for k in a:
        np.testing.assert_array_equal(b[k], a[k], err_msg=k)


def test_damaged_config_yaml_is_a_clean_error(tmp_path, tiny_model):
    cfg, raw = recipe("demo", tmp_path / "run", tiny_model, "run.rounds=1")
    RunDir(cfg.run.dir, raw).open()
    (tmp_path / "run" / "config.yaml").write_text("run: {dir: [unclosed\n")
    _, raw2 = recipe("demo", tmp_path / "run", tiny_model, "run.rounds=1", "sample.n=3")
    with pytest.raises(ConfigError, match=r"config.yaml cannot be read \(ParserError: while parsing a flow sequence in"):
        RunDir(cfg.run.dir, raw2).open()
