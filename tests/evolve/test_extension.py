"""Open for extension: a stage, a scorer and a preference loss registered from outside the package
(this file), and a recipe whose YAML lists them, run end to end without editing `jaxevo/`."""

import json
import math

import jax
import pytest

from jaxevo.config import load_config, to_dict
from jaxevo.errors import ConfigError
from jaxevo.evolve.config import EvolveConfig
from jaxevo.evolve.driver import run_evolve
from jaxevo.evolve.recipe import STAGES as STAGE_REGISTRY, stage
from jaxevo.evolve.rundir import read_jsonl, write_json
from jaxevo.evolve.scorers import SCORERS, ScorerSetup, register_scorer
from jaxevo.losses import PREFERENCE_LOSSES, register
from tests.evolve.conftest import SHRINK

TRACED = []  # the loss appends when traced: proof that training used it
GAMMA = 1.0


def _brevity_setup(ctx):
    """A set-up hook: the scale comes from the round, not from the scorer's name."""
    return ScorerSetup(params={"scale": 10.0 + ctx.round})


def brevity(group, params):
    """Shorter answers score higher: 1 / (1 + chars / scale)."""
    return [1.0 / (1.0 + len(r["text"]) / params["scale"]) for r in group["responses"]]


def tally_stage(ctx, out):
    """Counts the round's scored responses and their mean score."""
    scores = [r["score"] for g in read_jsonl(ctx.input("scored.jsonl")) for r in g["responses"]]
    tally = {"responses": len(scores), "mean": sum(scores) / len(scores)}
    write_json(out / "tally.json", tally)
    return tally


def margin_sigmoid(c, r, rc, rr, *, beta=0.1):
    """DPO with a fixed margin: -log sigmoid(beta * h - GAMMA)."""
    TRACED.append(True)
    h = (c - rc) - (r - rr)
    return (-jax.nn.log_sigmoid(beta * h - GAMMA), jax.lax.stop_gradient(beta * (c - rc)),
            jax.lax.stop_gradient(beta * (r - rr)))


@pytest.fixture(autouse=True, scope="module")
def registered():
    """Registers the three as a plugin module would at import, and removes them afterwards, so no
    other test (e.g. the loss registry's golden coverage) sees them."""
    register_scorer("test_brevity", setup=_brevity_setup)(brevity)
    stage("test_tally", reads=("scored.jsonl",), writes=("tally.json",))(tally_stage)
    register("test_margin_sigmoid")(margin_sigmoid)
    yield
    SCORERS.remove("test_brevity")
    STAGE_REGISTRY.remove("test_tally")
    PREFERENCE_LOSSES.remove("test_margin_sigmoid")


STAGES = ["prompts", "generate", "score", "test_tally", "data", "preference", "eval"]
RECIPE = f"""
stages: [{", ".join(STAGES)}]
run: {{dir: runs/ext, rounds: 1, seed: 0, recipe: extension}}
prompts: {{source: {{type: arithmetic, split: train, n: 64, levels: [1]}}}}
score: {{scorer: test_brevity}}
select: {{sft: none, pairs: score, min_margin: 0.0}}
preference:
  model: {{dtype: float32}}
  epochs: 1
  batch_size: 2
  objective: {{name: preference, loss_type: test_margin_sigmoid, beta: 0.1}}
eval: {{before: false, source: {{type: arithmetic, split: test, n: 6, levels: [1]}}}}
"""


def _load(tmp_path, model, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    cfg = load_config(EvolveConfig, path, [f"run.dir={tmp_path / 'run'}", f"model.path={model}", *SHRINK,
                                           "run.rounds=1"])
    return cfg, to_dict(cfg)


def test_a_recipe_of_outside_stage_scorer_and_loss_runs(tmp_path, tiny_model):
    cfg, raw = _load(tmp_path, tiny_model, RECIPE)
    m = run_evolve(cfg, raw)
    root = tmp_path / "run" / "round_001"
    st = m["rounds"]["1"]["stages"]
    assert list(st) == STAGES and m["rounds"]["1"]["done"]
    # The scorer, with the params its set-up hook gave (scale 10 + round 1).
    groups = read_jsonl(root / "score" / "scored.jsonl")
    for g in groups:
        for r in g["responses"]:
            assert r["score"] == pytest.approx(1.0 / (1.0 + len(r["text"]) / 11.0))
    # The stage, between two built-in ones, read what `score` wrote.
    scores = [r["score"] for g in groups for r in g["responses"]]
    tally = json.loads((root / "test_tally" / "tally.json").read_text())
    assert tally == {"responses": len(scores), "mean": pytest.approx(sum(scores) / len(scores))}
    assert st["test_tally"]["responses"] == cfg.prompts.per_round * cfg.sample.n
    # The loss trained the preference phase: at step 1 the policy is its reference (h = 0), so
    # the loss is -log sigmoid(-GAMMA), not DPO's log 2.
    assert TRACED and st["preference"]["steps"] >= 1 and st["data"]["pairs"] >= 1
    assert st["preference"]["first_loss"] == pytest.approx(-math.log(1 / (1 + math.exp(GAMMA))), abs=1e-3)
    assert m["rounds"]["1"]["model"] == "round_001/preference/train/final"


def test_a_stage_listed_before_what_it_reads_is_refused_before_running(tmp_path, tiny_model):
    bad = RECIPE.replace("score, test_tally", "test_tally, score")
    cfg, raw = _load(tmp_path, tiny_model, bad)
    with pytest.raises(ConfigError, match=r"stages: 'test_tally' reads scored.jsonl, which no stage "
                                          r"listed before it writes \(written by: .*score.*\)"):
        run_evolve(cfg, raw)
    assert not (tmp_path / "run").exists()  # refused before the run directory was made
    cfg, raw = _load(tmp_path, tiny_model, RECIPE.replace("test_tally", "test_tallly"))
    with pytest.raises(ConfigError, match=r"unknown stage in `stages:` 'test_tallly'; known: .*test_tally"):
        run_evolve(cfg, raw)
    cfg, raw = _load(tmp_path, tiny_model, RECIPE.replace("scorer: test_brevity", "scorer: test_brevityy"))
    with pytest.raises(ConfigError, match=r"unknown score.scorer 'test_brevityy'; known: .*test_brevity"):
        run_evolve(cfg, raw)
    assert not (tmp_path / "run").exists()
