"""LoRA on the 8-device CPU mesh: adapters shard with their base weights, and the losses equal
1 device's (subprocess: the device count is fixed when jax starts)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.conftest import subprocess_env

ROOT = Path(__file__).parents[2]


def test_lora_dpo_mesh_invariance(tmp_path):
    env = subprocess_env(devices=8)
    proc = subprocess.run([sys.executable, "-m", "tests.lora._mesh_worker", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads((tmp_path / "mesh.json").read_text())
    one, many = res["1"], res["2x2x2"]
    assert many["devices"] == 8
    # A of q shards its input (embed) over fsdp, B its heads over tensor, like q_proj itself
    assert "fsdp" in many["q_a_spec"] and "tensor" in many["q_b_spec"], many
    assert "tensor" in many["up_b_spec"]
    for k in ("loss", "grad_norm", "param_norm", "rewards/margins", "logps/chosen"):
        np.testing.assert_allclose([m[k] for m in many["curve"]], [m[k] for m in one["curve"]],
                                   rtol=1e-5, atol=1e-5, err_msg=k)
    assert one["curve"][-1]["loss"] < one["curve"][0]["loss"]
