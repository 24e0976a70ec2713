"""jaxevo's preference losses against golden values produced by TRL's own code (no torch needed)."""

import pytest

from jaxevo.losses import METRIC_NAMES, PREFERENCE_LOSSES

from ._golden import case_id, check_case, load_golden

GOLDEN = load_golden()


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=case_id)
def test_matches_trl_golden(case):
    check_case(GOLDEN, case)


def test_golden_covers_required_types():
    covered = {c["loss_type"] for c in GOLDEN["cases"]}
    assert {"sigmoid", "ipo", "hinge", "robust", "simpo", "orpo"} <= covered
    # every TRL-derived registry entry has goldens; cdpo and fdpo are jaxevo's own (tested elsewhere)
    assert set(PREFERENCE_LOSSES) - covered == {"cdpo", "fdpo"}
    assert all(set(METRIC_NAMES) <= set(c["metrics"]) for c in GOLDEN["cases"] if "metrics" in c)
    assert GOLDEN["B"] == 8
