"""`jaxevo plan` for an online (GRPO-family) step on a tiny config over a 4-device host-CPU mesh:
the `policy` batch with old and reference log-probs compiles, the log-prob forward is planned,
and the colocated peak adds up the train state, the reference, the sampler and the largest temp;
with `share_prompt` the planned batch is the one `rollout.update_batch` builds for the grpo stage."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxevo.errors import ConfigError
from jaxevo.plan_online import policy_rows
from jaxevo.train.config import ObjectiveSection, TrainConfig
from jaxevo.train.rollout import update_batch
from tests.conftest import TINY_HF, subprocess_env, tiny_cfg

ROOT = Path(__file__).parents[2]


def _plan(tmp_path, cfg: dict, family: str = "llama3"):
    path = tmp_path / "tiny.yaml"
    path.write_text(json.dumps({"model_config": str(tmp_path / "config.json"), **cfg,
                                "target": {"accelerator": "v5p-8", "platform": "cpu"}}))
    (tmp_path / "config.json").write_text(json.dumps(TINY_HF[family]))
    env = subprocess_env()  # the command asks for its devices itself
    return subprocess.run([sys.executable, "-m", "jaxevo.cli", "plan", "--config", str(path),
                           "--json", str(tmp_path / "plan.json")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


POLICY = {"name": "policy", "loss_type": "dapo", "beta": 0.04, "hparams": {"iterations": 2, "epsilon_high": 0.28}}


def test_plan_online_step_on_cpu_mesh(tmp_path):
    p = _plan(tmp_path, {"seq_len": 48, "train": {"mesh": [1, 4, 1], "batch_size": 8, "micro_batch_size": 4,
                                                  "objective": POLICY},
                         "sample": {"batch": 8, "prompt_length": 32, "max_new_tokens": 16}})
    assert p.returncode == 0, p.stderr[-3000:]
    assert "online step (sampler and trainer colocated" in p.stdout
    plan = json.loads((tmp_path / "plan.json").read_text())
    tr, on = plan["train"], plan["online"]
    assert tr["objective"] == "policy" and tr["views"] == ["completion"] and not tr["does_not_fit"]
    assert tr["logps_forward"]["temp"] > 0
    sb = tr["state_bytes"]
    # the batch holds tokens/labels/segments/positions + advantage + old and reference log-probs
    assert sb["batch"] == (8 * 48 * 4 * 4 + 8 * 4 + 2 * 8 * 48 * 4) // 4
    res = on["resident"]
    assert res["train_state"] == sb["params"] + sb["opt_state"] and res["reference_params"] == sb["params"]
    assert on["peak_estimate"] == sum(res.values()) + max(on["temps"].values()) + sb["batch"]


def test_plan_online_step_with_shared_prompts(tmp_path):
    """share_prompt 2: 16 completions make 8 rows of a 32-token prompt and 2 x (1 + 16) tokens
    (79, padded to 80), micro-batches of 4 rows; the batch the plan compiles is, byte for byte, the
    longest one `rollout.update_batch` gives the grpo stage, plus old and reference log-probs."""
    p = _plan(tmp_path, {"share_prompt": 2, "train": {
        "mesh": [1, 4, 1], "batch_size": 16, "micro_batch_size": 8, "data": {"pad_to_multiple": 16},
        "objective": POLICY}, "sample": {"batch": 16, "prompt_length": 32, "max_new_tokens": 16}})
    assert p.returncode == 0, p.stderr[-3000:]
    assert "2 completions a row (share_prompt)" in p.stdout
    tr = json.loads((tmp_path / "plan.json").read_text())["train"]
    assert (tr["global_batch"], tr["micro_batch"], tr["seq_len"], tr["per_row"]) == (8, 4, 80, 2)
    assert tr["tokens_per_step"] == 8 * 80 and not tr["does_not_fit"] and tr["logps_forward"]["temp"] > 0
    real = update_batch([[5] * 32] * 16, [[7] * 16] * 16, np.ones(16), per_row=2, num_micro=2,
                        pad_to_multiple=16)
    arrays = [*real.views["completion"].values(), *real.extras.values()]
    assert real.views["completion"]["tokens"].shape == (8, 80) and real.extras["columns"].shape == (8, 2, 16)
    assert tr["state_bytes"]["batch"] == (sum(a.nbytes for a in arrays) + 2 * 8 * 80 * 4) // 4


def test_plan_refuses_shared_prompts_that_do_not_fit_the_batch(tmp_path):
    p = _plan(tmp_path, {"share_prompt": 3, "train": {
        "mesh": [1, 4, 1], "batch_size": 16, "micro_batch_size": 8, "objective": POLICY},
        "sample": {"batch": 16, "prompt_length": 32, "max_new_tokens": 16}})
    assert p.returncode == 2 and "share_prompt=3" in p.stderr and "divide" in p.stderr, p.stderr[-2000:]


def test_policy_rows_refuses_sliding_windows_and_other_objectives():
    t = TrainConfig(batch_size=8, micro_batch_size=4, objective=ObjectiveSection(name="policy"))
    assert policy_rows(t, 64, 2, 32, 16, tiny_cfg("llama3")).rows == 4
    with pytest.raises(ConfigError, match="sliding-window"):
        policy_rows(t, 64, 2, 32, 16, tiny_cfg("gemma3"))
    with pytest.raises(ConfigError, match="only the online objective"):
        policy_rows(t.replace(objective=dataclasses.replace(t.objective, name="sft")), 64, 2, 32, 16,
                    tiny_cfg("llama3"))
