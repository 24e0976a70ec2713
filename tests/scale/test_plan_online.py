"""`jaxevo plan` for an online (GRPO-family) step on a tiny config over a 4-device host-CPU mesh:
the `policy` batch with old and reference log-probs compiles, the log-prob forward is planned,
and the colocated peak adds up the train state, the reference, the sampler and the largest temp."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import TINY_HF

ROOT = Path(__file__).parents[2]


def test_plan_online_step_on_cpu_mesh(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(json.dumps({
        "model_config": str(tmp_path / "config.json"), "seq_len": 48,
        "train": {"mesh": [1, 4, 1], "batch_size": 8, "micro_batch_size": 4,
                  "objective": {"name": "policy", "loss_type": "dapo", "beta": 0.04,
                                "hparams": {"iterations": 2, "epsilon_high": 0.28}}},
        "sample": {"batch": 8, "prompt_length": 32, "max_new_tokens": 16},
        "target": {"accelerator": "v5p-8", "platform": "cpu"}}))
    (tmp_path / "config.json").write_text(json.dumps(TINY_HF["llama3"]))
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    env.pop("XLA_FLAGS", None)
    p = subprocess.run([sys.executable, "-m", "jaxevo.cli", "plan", "--config", str(cfg),
                        "--json", str(tmp_path / "plan.json")], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
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
