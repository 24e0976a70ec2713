"""EVOLVE's activation phase (`rounds.sft_rounds: activation`): SR-aware SFT in round 1 only, then
rounds of preference training; the preference reference is the previous round's final model (the
activation SFT's model in round 1); a run killed after each stage of round 2 resumes to the same
parameters."""

import json
import shutil

import numpy as np
import pytest

from jaxevo.evolve.driver import run_evolve
from jaxevo.evolve.rundir import read_jsonl
from jaxevo.evolve.stages.training import Interrupted
from jaxevo.train.batches import tokenize_views
from jaxevo.train.objectives import get_objective
from jaxevo.weights.load import load_pretrained
from tests.evolve.conftest import recipe
from tests.evolve.test_resume import _params
from tests.train.helpers import label_logps

# f32 phases with large steps, so that the base, the SFT model and round 1's model differ by far
# more than the float error of a log-prob sum.
EXTRA = ["run.rounds=2", "eval.before=false", "select.control=false", "select.pairs=rule",
         "select.min_margin=0.0", "sft.batch_size=4", "preference.batch_size=2",
         "preference.checkpoint.every=1", "sft.model.dtype=float32", "preference.model.dtype=float32",
         "sft.optim.lr=1e-2", "preference.optim.lr=1e-3", "prompts.per_round=4", "refine.steps=1",
         "eval.source.n=3", "eval.refine_steps=2", "eval.self_feedback=true"]


def _reference_matches(run_root, cfg, round_: int, expected: str, other: str) -> None:
    """The preference stage's stored reference log-probs equal a direct computation under
    `expected`'s weights, and not under `other`'s."""
    pairs = read_jsonl(run_root / f"round_{round_:03d}" / "data" / "pairs.jsonl")
    with np.load(run_root / f"round_{round_:03d}" / "preference" / "train" / "reference_logps.npz") as z:
        stored = {k[len("ref/"):]: z[k] for k in z.files if k.startswith("ref/")}
    d = cfg.preference.data
    want, alt = load_pretrained(expected), load_pretrained(other)
    data = tokenize_views(pairs, get_objective(cfg.preference.objective.name).views, want.tokenizer,
                          max_length=d.max_length, pad_to_multiple=d.pad_to_multiple,
                          templates={"refine_template": cfg.refine.template,
                                     "feedback_template": cfg.feedback.template})
    assert set(stored) == set(data.views)
    for v in data.views:
        tokens, labels = data.arrays[f"{v}/tokens"], data.arrays[f"{v}/labels"]
        a = label_logps(want.params, want.cfg, tokens, labels)
        np.testing.assert_allclose(stored[v], a, rtol=1e-4, atol=1e-3, err_msg=f"round {round_} {v}")
        if v == "refine_rejected":  # the other model would have failed
            assert np.max(np.abs(a - label_logps(alt.params, alt.cfg, tokens, labels))) > 0.05, round_


@pytest.mark.heavy  # two rounds of EVOLVE and a resumed copy of round 2: ~80 s of CPU on 2 cores
def test_activation_sft_once_reference_previous_and_exact_resume(tmp_path, tiny_model):
    # Round 1 once; a copy of the finished run then continues with kills (run.rounds may grow on a
    # resume), the original straight.
    root = tmp_path / "straight"
    run_evolve(*recipe("evolve", root, tiny_model, *EXTRA, "run.rounds=1"))
    shutil.copytree(root, tmp_path / "killed")
    cfg, raw = recipe("evolve", root, tiny_model, *EXTRA)
    assert cfg.rounds.sft_rounds == "activation" and cfg.rounds.reference == "previous"
    m = run_evolve(cfg, raw)
    r1, r2 = m["rounds"]["1"]["stages"], m["rounds"]["2"]["stages"]
    assert r1["sft"]["steps"] >= 1 and r1["preference"]["steps"] >= 1
    assert r2["sft"]["skipped"] == "rounds.sft_rounds=activation" and r2["sft"]["model"] is None
    assert r2["preference"]["steps"] >= 1 and not (root / "round_002" / "sft" / "train").exists()
    # Each round's evaluation reports its chain of self-refinement with self-feedback.
    st = r2["eval"]["strategy"]
    assert st["refine_steps"] == 2 and len(st["accuracy_by_step"]) == 3 and sum(st["stopped_at"].values()) == 3
    metrics = [json.loads(x) for x in (root / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["eval/refine_step_2/accuracy"] == st["accuracy_by_step"][2]
    # Round 1: SFT ran first; its model starts the preference phase and is its reference.
    sft1 = str(root / "round_001" / "sft" / r1["sft"]["model"])
    _reference_matches(root, cfg, 1, expected=sft1, other=tiny_model)
    # Round 2 (no SFT): starts from round 1's final model, its reference.
    final1 = str(root / m["rounds"]["1"]["model"])
    assert final1.endswith("preference/train/final")
    _reference_matches(root, cfg, 2, expected=final1, other=sft1)

    # Killed around what the activation phase changes in round 2: before and after its skipped SFT
    # stage, in the middle of its preference training (resumed from round 1's model, with round 1's
    # model as reference) and after it. (Every stage of a round in turn: tests/evolve/test_resume.py.)
    cfg_k, raw_k = recipe("evolve", tmp_path / "killed", tiny_model, *EXTRA)
    for stage in ("data", "sft"):
        mk = run_evolve(cfg_k, raw_k, stop_after=(2, stage))
        assert list(mk["rounds"]["2"]["stages"])[-1] == stage
    with pytest.raises(Interrupted):
        run_evolve(cfg_k, raw_k, stop_at_step=1)
    assert list((tmp_path / "killed" / "round_002" / "preference.partial" / "train" / "checkpoints").iterdir())
    mk = run_evolve(cfg_k, raw_k, stop_after=(2, "preference"))
    assert list(mk["rounds"]["2"]["stages"])[-1] == "preference"
    mk = run_evolve(cfg_k, raw_k)
    assert mk["rounds"]["2"]["done"] and mk["rounds"]["2"]["stages"]["sft"]["skipped"]
    pa, pb = _params(root), _params(tmp_path / "killed")
    assert pa.keys() == pb.keys()
    for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)


@pytest.mark.parametrize("mode,runs", [("every", [1, 2, 3]), ("activation", [2]), ("none", [])])
def test_sft_rounds_pick_the_rounds_that_train_sft(mode, runs):
    from types import SimpleNamespace

    from jaxevo.evolve.config import EvolveConfig, RoundsSection
    from jaxevo.evolve.stages.training import sft_runs

    cfg = EvolveConfig(rounds=RoundsSection(sft_rounds=mode, activation_round=2))
    assert [r for r in (1, 2, 3) if sft_runs(SimpleNamespace(cfg=cfg, round=r))] == runs


def test_activation_round_must_be_positive():
    from jaxevo.errors import ConfigError
    from jaxevo.evolve.config import EvolveConfig, RoundsSection

    with pytest.raises(ConfigError, match="rounds.activation_round=0"):
        EvolveConfig(rounds=RoundsSection(sft_rounds="activation", activation_round=0))


def test_eval_self_feedback_needs_refine_steps():
    from jaxevo.errors import ConfigError
    from jaxevo.evolve.config import EvalSection, EvolveConfig

    with pytest.raises(ConfigError, match="eval.self_feedback .* eval.refine_steps >= 1"):
        EvolveConfig(eval=EvalSection(self_feedback=True))
