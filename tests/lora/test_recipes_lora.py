"""Recipes' training phases take a `lora:` section: one round of EVOLVE (SFT + DPO) and SELF
(meta-skill views + SFT) with adapters; each phase exports the merged model and its adapter.
Run the slow one too with `pytest -m slow tests/lora/test_recipes_lora.py`."""

import json

import pytest

from jaxevo.evolve.driver import run_evolve
from tests.evolve.conftest import recipe
from tests.evolve.test_recipes import TRAIN_OVERRIDES

LORA = ["run.rounds=1", "sft.lora.rank=4", "sft.lora.alpha=8"]


@pytest.mark.parametrize("name,extra", [
    ("evolve", ["preference.lora.rank=4", "preference.lora.targets=[q,v]"]),
    # ~2 min on the shared 2-core machine; EVOLVE above already covers both phase kinds.
    pytest.param("self", [], marks=pytest.mark.heavy),
])
def test_one_round_with_lora(name, extra, tmp_path, tiny_model):
    cfg, raw = recipe(name, tmp_path / name, tiny_model, *TRAIN_OVERRIDES[name], *LORA, *extra)
    m = run_evolve(cfg, raw)
    st = m["rounds"]["1"]["stages"]
    phases = {"sft": 4}
    if name == "evolve":
        phases["preference"] = 4
        assert st["preference"]["steps"] >= 1
    if name == "self":
        assert m["rounds"]["0"]["stages"]["meta"]["steps"] >= 1
    for phase, r in phases.items():
        assert st[phase]["steps"] >= 1
        final = tmp_path / name / "round_001" / phase / "train" / "final"
        conf = json.loads((final / "adapter" / "adapter_config.json").read_text())
        assert conf["r"] == r and (final / "model" / "config.json").is_file()
    if name == "evolve":
        conf = json.loads((tmp_path / name / "round_001" / "preference" / "train" / "final" /
                           "adapter" / "adapter_config.json").read_text())
        assert sorted(conf["target_modules"]) == ["q_proj", "v_proj"]
    assert (tmp_path / name / "final_model" / "config.json").exists()
