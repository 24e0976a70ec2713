"""jaxevo's GRPO-family losses and advantages against golden values from TRL 1.16's own code
(``GRPOTrainer._compute_loss``, the advantage blocks of GRPOTrainer and RLOOTrainer); no torch needed.
Each loss case checks the loss, every metric TRL logs and the gradient d loss / d logps."""

import numpy as np
import pytest

from jaxevo.losses import POLICY_LOSS_TYPES, soft_overlong_punishment

from ._policy_golden import check_advantage_case, check_loss_case, load_golden, loss_case_id

GOLDEN = load_golden()


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=loss_case_id)
def test_policy_loss_matches_trl_golden(case):
    check_loss_case(GOLDEN, case)


@pytest.mark.parametrize("case", GOLDEN["advantage_cases"], ids=lambda c: f"{c['kind']}-{c['option']}")
def test_advantages_match_trl_golden(case):
    check_advantage_case(GOLDEN, case)


def test_golden_covers_required_cases():
    cases = GOLDEN["cases"]
    assert {c["loss_type"] for c in cases} == set(POLICY_LOSS_TYPES)
    for lt in POLICY_LOSS_TYPES:
        mine = [c["hparams"] for c in cases if c["loss_type"] == lt]
        assert any(h["beta"] == 0 for h in mine) and any(h["beta"] > 0 for h in mine), lt
        assert any(h["on_policy"] for h in mine), lt
    clipped = [c["hparams"] for c in cases if c["loss_type"] != "cispo"]
    assert any(h["epsilon_low"] != h["epsilon_high"] for h in clipped)
    assert any(h["importance_sampling_level"] == "sequence" for h in clipped)
    assert any(h["delta"] is not None for h in clipped)
    mask = GOLDEN["inputs"]["mask"]
    assert any(sum(row) == 0 for row in mask) and len({sum(row) for row in mask}) > 2  # padded, ragged rows
    # some ratios are clipped, so the clipped branch is exercised
    assert any(c["metrics"].get("clip_ratio/region_mean", 0) > 0 for c in cases)
    assert any(c["metrics"].get("cispo_clip_ratio", 0) > 0 for c in cases)
    assert {(c["kind"], c["option"]) for c in GOLDEN["advantage_cases"]} == {
        ("grpo", "group"), ("grpo", "batch"), ("grpo", "none"), ("rloo", False), ("rloo", True)}


def test_soft_overlong_punishment_hand_values():
    # L_max 100, cache 20: 0 up to 80 tokens, then (80 - n) / 20, -1 beyond 100 (TRL's docstring: 90 -> -0.5)
    got = soft_overlong_punishment([10, 80, 81, 90, 100, 101, 500], 100, 20)
    np.testing.assert_allclose(np.asarray(got), [0, 0, -0.05, -0.5, -1.0, -1.0, -1.0], rtol=1e-6)
