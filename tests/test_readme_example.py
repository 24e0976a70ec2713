"""The README's "Bring your own task" example, run as written (its three files are read from the
README) on the tiny model: the user's reward function, in a file outside the package named by
path in the YAML's `run.plugins`, scores one round, and the SFT data holds exactly the
completions the function accepted."""

import re
import sys

import pytest

from jaxevo.config import load_config, to_dict
from jaxevo.errors import ConfigError
from jaxevo.evolve.config import EvolveConfig
from jaxevo.evolve.driver import run_evolve
from jaxevo.evolve.rundir import read_jsonl
from tests.evolve.conftest import ROOT

BLOCK = re.compile(r"<!-- file: (\S+) -->\s*```\w*\n(.*?)```", re.S)


def readme_files() -> dict[str, str]:
    return dict(BLOCK.findall((ROOT / "README.md").read_text()))


def test_readme_example_one_round_from_a_user_reward(tmp_path, tiny_model, monkeypatch):
    files = readme_files()
    assert sorted(files) == ["my_prompts.jsonl", "my_recipe.yaml", "my_reward.py"]
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)  # as the README says: run in the folder that holds the files
    # The tiny model writes 12 random tokens: made shorter, kept when cut off, no progress bars.
    cfg = load_config(EvolveConfig, tmp_path / "my_recipe.yaml", [
        f"model.path={tiny_model}", "sample.max_new_tokens=12", "select.allow_truncated=true",
        "run.progress=false"])
    m = run_evolve(cfg, to_dict(cfg))
    assert m["rounds"]["1"]["done"]
    root = tmp_path / "runs" / "my_task" / "round_001"

    # The user's function, imported the way the plugin file was, called directly.
    sys.path.insert(0, str(tmp_path))
    try:
        from my_reward import within_budget
    finally:
        sys.path.remove(str(tmp_path))
    groups = read_jsonl(root / "score" / "scored.jsonl")
    accepted, scored = set(), 0
    for g in groups:
        texts = [r["text"] for r in g["responses"]]
        budget = g["item"].get("max_chars")
        direct = within_budget([g["prompt"]] * len(texts), texts, max_chars=[budget] * len(texts))
        assert [r["score"] for r in g["responses"]] == direct
        accepted |= {(g["prompt"], t) for t, s in zip(texts, direct) if s == 1.0}
        scored += sum(s is not None for s in direct)
    sft = read_jsonl(root / "data" / "sft.jsonl")
    assert {(r["prompt"], r["response"]) for r in sft} == accepted and len(sft) == len(accepted)
    # A real test: some replies were accepted and some refused; the prompt without a budget got
    # no opinion (None) and nothing of it was trained on.
    assert 0 < len(accepted) < scored
    assert any(g["item"].get("max_chars") is None and all(r["score"] is None for r in g["responses"])
               for g in groups)
    assert m["rounds"]["1"]["stages"]["sft"]["steps"] >= 1
    assert m["rounds"]["1"]["stages"]["score"]["unscored"] == cfg.sample.n


@pytest.mark.parametrize("fn, message", [
    ("my_reward:no_such_fn", r"score\.rewards\[0\]\.fn 'my_reward:no_such_fn'|has no attribute 'no_such_fn'"),
    ("missing_module_q:fn", r"cannot import module 'missing_module_q'"),
])
def test_a_bad_reward_reference_fails_before_the_run_starts(tmp_path, tiny_model, monkeypatch, fn, message):
    for name, text in readme_files().items():
        (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    cfg = load_config(EvolveConfig, tmp_path / "my_recipe.yaml",
                      [f"model.path={tiny_model}", f"score.rewards=[{{fn: '{fn}'}}]"])
    with pytest.raises(ConfigError, match=message):
        run_evolve(cfg, to_dict(cfg))
    assert not (tmp_path / "runs").exists()  # refused before the run directory was made
