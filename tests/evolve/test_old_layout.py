"""A run directory written before stages were named by stage (round_NNN/NN_name folders, numbered
by the old fixed order) resumes after its folders and manifest paths are renamed; one with an
unfinished stage of that layout is refused with what to do, and resumes once that is done."""

import json
import re
import shutil

import pytest
import yaml

from jaxevo.errors import ConfigError
from jaxevo.evolve.driver import run_evolve
from jaxevo.evolve.rundir import RunDir, config_hash
from tests.evolve.conftest import recipe

OLD = ("meta", "prompts", "generate", "feedback", "refine", "score", "data", "sft", "preference",
       "control", "eval", "gate")
EXTRA = ["sft.epochs=1", "sft.batch_size=4", "sft.micro_batch_size=2", "run.rounds=2"]


def _to_old_layout(root, raw):
    """What the jaxevo before this change left: numbered folders, the manifest's paths with them,
    a config.yaml without `stages:` and the config hash of that config."""
    for d in sorted(root.glob("round_*/*")):
        d.rename(d.parent / f"{OLD.index(d.name):02d}_{d.name}")
    old_raw = {k: v for k, v in raw.items() if k != "stages"}
    text = (root / "manifest.json").read_text()
    text = re.sub(r"(round_\d{3})/([a-z]+)/", lambda m: f"{m.group(1)}/{OLD.index(m.group(2)):02d}_{m.group(2)}/", text)
    m = json.loads(text)
    m["config_hash"] = config_hash(old_raw)
    (root / "manifest.json").write_text(json.dumps(m))
    (root / "config.yaml").write_text(yaml.safe_dump(old_raw, sort_keys=False))
    return m


def test_numbered_run_dir_resumes_or_is_refused_with_the_way_on(tmp_path, tiny_model):
    root = tmp_path / "run"
    cfg, raw = recipe("demo", root, tiny_model, *EXTRA)
    run_evolve(cfg, raw, stop_after=(2, "data"))
    old = _to_old_layout(root, raw)
    assert old["rounds"]["1"]["model"] == "round_001/07_sft/train/final"
    assert (root / "round_001" / "07_sft").is_dir() and (root / "round_002" / "06_data").is_dir()

    # Killed in round 2's SFT: an unfinished stage of the old layout is refused, nothing renamed.
    partial = root / "round_002" / "07_sft.partial"
    (partial / "train").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"round_002/07_sft.partial is an unfinished stage .* delete that "
                                          r"folder .* run the same command again"):
        run_evolve(cfg, raw)
    assert (root / "round_001" / "07_sft").is_dir() and json.loads((root / "manifest.json").read_text()) == old

    # Done as the message says: the run resumes at round 2's SFT, its finished stages kept.
    shutil.rmtree(partial)
    m = run_evolve(cfg, raw)
    assert not list(root.glob("round_*/[0-9][0-9]_*"))
    assert sorted(p.name for p in (root / "round_002").iterdir()) == sorted(cfg.stages)
    assert m["rounds"]["1"]["model"] == "round_001/sft/train/final" and m["rounds"]["2"]["done"]
    for r, name in (("1", "gate"), ("2", "data"), ("0", "eval")):  # not run again
        assert m["rounds"][r]["stages"][name]["finished"] == old["rounds"][r]["stages"][name]["finished"]
    # Round 2 trained from round 1's model at its new path.
    info = json.loads((root / "round_002" / "sft" / "train" / "final" / "jaxevo.json").read_text())
    assert info["base_model"] == str(root / "round_001" / "sft" / "train" / "final")
    assert m["final_model_from"] == "round_002/sft/train/final"


def test_numbered_folders_of_another_order_are_refused(tmp_path):
    run = RunDir(tmp_path, {"a": 1}).open()
    (tmp_path / "round_001" / "03_generate").mkdir(parents=True)  # generate was 02 in the old order
    with pytest.raises(ConfigError, match=r"round_001/03_generate does not match .* start a new run directory"):
        RunDir(tmp_path, {"a": 1}).open()
    assert (tmp_path / "round_001" / "03_generate").is_dir() and run.manifest()["rounds"] == {}
