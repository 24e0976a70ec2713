"""`jaxevo plan` on a tiny config over an 8-device host-CPU mesh (subprocess: the device count
must be set before JAX starts), presets vs the shipped JSONs, accelerator parsing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jaxevo.errors import ConfigError
from jaxevo.models.config import ModelConfig
from jaxevo.plan import PRESETS, parse_accelerator, topology_name
from tests.conftest import TINY_HF, subprocess_env

ROOT = Path(__file__).parents[2]


def test_presets_match_shipped_model_jsons():
    for name in ("llama3.1-8b", "qwen2.5-7b"):
        assert json.loads((ROOT / f"configs/scale/models/{name}.json").read_text()) == PRESETS[name]
    assert abs(ModelConfig.from_hf(PRESETS["llama3.1-8b"]).num_params() - 8.03e9) < 0.01e9
    assert abs(ModelConfig.from_hf(PRESETS["qwen2.5-7b"]).num_params() - 7.62e9) < 0.01e9


def test_accelerators():
    assert parse_accelerator("v5p-32")[2] == 16 and topology_name("v5p", 16) == "v5p:2x2x4"
    assert parse_accelerator("v5litepod-64")[2] == 64 and topology_name("v5e", 64) == "v5e:8x8"
    with pytest.raises(ConfigError, match="expected e.g."):
        parse_accelerator("h100-8")


def test_plan_tiny_on_cpu_mesh(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(json.dumps({  # YAML is a superset of JSON
        "model_config": str(tmp_path / "config.json"), "seq_len": 64,
        "train": {"mesh": [1, 4, 2], "batch_size": 8, "objective": {"name": "preference"},
                  "model": {"remat": "full"}},
        "sample": {"batch": 8, "prompt_length": 32, "max_new_tokens": 16},
        "target": {"accelerator": "v5p-16", "platform": "cpu"}}))
    (tmp_path / "config.json").write_text(json.dumps(TINY_HF["llama3"]))
    env = subprocess_env()  # the command asks for the 8 devices itself
    p = subprocess.run([sys.executable, "-m", "jaxevo.cli", "plan", "--config", str(cfg),
                        "--json", str(tmp_path / "plan.json")], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "8 host CPU devices" in p.stdout and "NOTE: CPU compile" in p.stdout
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["devices"] == 8 and plan["mesh"] == {"data": 1, "fsdp": 4, "tensor": 2}
    tr = plan["train"]
    n = plan["params"]
    # f32 master params: every weight split over fsdp x tensor (or fsdp only), never replicated
    assert n * 4 / 8 <= tr["state_bytes"]["params"] <= n * 4 / 4 + 4096
    assert tr["state_bytes"]["opt_state"] >= 2 * tr["state_bytes"]["params"] - 1024
    assert tr["memory"]["temp"] > 0 and tr["cost"]["flops"] > 0 and not tr["does_not_fit"]
    assert tr["tokens_per_step"] == 8 * 64 * 2
    sm = plan["sample"]
    assert sm["decode"]["memory"]["arguments"] > 0 and sm["prefill"]["cost"]["flops"] > 0
    assert 0 < plan["estimate"]["train"]["mfu_upper_bound"] <= 1


@pytest.mark.parametrize("name,params,features", [
    ("qwen3-8b", 8.19e9, {"qk_norm": True, "tie_word_embeddings": False}),
    ("gemma-3-12b", 11.77e9, {"qk_norm": True, "sandwich_norms": True, "tie_word_embeddings": True,
                              "sliding_window": 1024, "rope_local_theta": 10000.0}),
])
def test_family_scale_configs_parse(name, params, features):
    """The shipped v5p plans of the newer families: the YAML is a valid PlanConfig and its model
    JSON the published model (parameter count, features; Gemma 3: 5 local layers per global)."""
    from jaxevo.config import load_config
    from jaxevo.plan import PlanConfig, resolve_model_config

    yaml = next((ROOT / "configs/scale").glob(f"{name}-v5p-*.yaml"))
    cfg = load_config(PlanConfig, yaml, [])
    mcfg = ModelConfig.from_hf(resolve_model_config(cfg.model_config, yaml.parent))
    assert abs(mcfg.num_params() - params) < 0.01e9
    assert {k: getattr(mcfg, k) for k in features} == features
    if name.startswith("gemma"):
        assert mcfg.sliding_layers.count(False) == 8 and mcfg.rope_scaling_dict["factor"] == 8.0
