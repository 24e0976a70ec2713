"""`jaxevo plan` with `train.lora.rank`: the state is the adapters (and their Adam moments), the
base is a frozen argument; compiled on the 8-device CPU mesh."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jaxevo.lora import LoraSection, num_adapter_params
from jaxevo.models.config import ModelConfig
from tests.conftest import TINY_HF, subprocess_env

ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize("quantize", [None, "nf4"])
def test_plan_reports_lora_state(tmp_path, quantize):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(json.dumps({
        "model_config": str(tmp_path / "config.json"), "seq_len": 64,
        "train": {"mesh": [1, 4, 2], "batch_size": 8,
                  "lora": {"rank": 4, "quantize_base": quantize},
                  "objective": {"name": "preference", "precompute_ref": False}},
        "sample": {"batch": 8, "prompt_length": 32, "max_new_tokens": 16},
        "target": {"accelerator": "v5p-16", "platform": "cpu"}}))
    (tmp_path / "config.json").write_text(json.dumps(TINY_HF["llama3"]))
    env = subprocess_env()  # the command asks for its devices itself
    p = subprocess.run([sys.executable, "-m", "jaxevo.cli", "plan", "--config", str(cfg),
                        "--json", str(tmp_path / "plan.json")], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    plan = json.loads((tmp_path / "plan.json").read_text())
    tr, n = plan["train"], plan["params"]
    n_ad = num_adapter_params(LoraSection(rank=4), ModelConfig.from_hf(TINY_HF["llama3"]))
    sb = tr["state_bytes"]
    assert tr["lora_rank"] == 4 and not tr["does_not_fit"]
    # adapters in f32, each split over fsdp and/or tensor or replicated (rank-only leaves: none)
    assert n_ad * 4 / 8 <= sb["params"] <= n_ad * 4
    assert sb["opt_state"] >= 2 * sb["params"] - 1024  # Adam moments of the adapters only
    if quantize is None:
        assert n * 4 / 8 <= sb["frozen_base"] <= n * 4 / 4 + 4096  # the base: an argument, sharded
        return
    # QLoRA: the 7 projections at 0.5 byte + 4 bytes per 64 (sharded over fsdp = 4 where they
    # divide), the rest (embedding, head, norms) fp32 as before
    mc = ModelConfig.from_hf(TINY_HF["llama3"])
    e, f, hd, kd = mc.hidden_size, mc.intermediate_size, mc.num_heads * mc.head_dim, \
        mc.num_kv_heads * mc.head_dim
    proj = mc.num_layers * (e * hd + 2 * e * kd + hd * e + 3 * e * f)
    q_bytes = proj // 2 + 4 * proj // 64
    assert tr["quantize_base"] == "nf4"
    assert q_bytes / 4 + (n - proj) * 4 / 8 <= sb["frozen_base"] <= q_bytes + (n - proj) * 4 / 4 + 4096
