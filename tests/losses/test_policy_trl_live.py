"""Live comparison of the GRPO-family losses with the installed TRL (skipped without torch/trl)."""

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")

from ._policy_golden import check_advantage_case, check_loss_case, load_generator, load_golden  # noqa: E402


def test_live_trl_matches_jaxevo_on_new_inputs():
    gen = load_generator()
    live = gen.compute_cases(gen.make_inputs(b=5, t=9, seed=7))
    for case in live["cases"]:
        check_loss_case(live, case)
    for case in live["advantage_cases"]:
        check_advantage_case(live, case)


def test_stored_goldens_still_match_live_trl():
    gen = load_generator()
    stored, live = load_golden(), gen.compute_cases()
    assert len(live["cases"]) == len(stored["cases"])
    for a, b in zip(live["cases"], stored["cases"]):
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-6, err_msg=a["loss_type"])


def test_soft_overlong_punishment_matches_trl():
    from trl.rewards import get_soft_overlong_punishment

    from jaxevo.losses import soft_overlong_punishment

    lengths = list(range(0, 140, 3))
    for max_len, cache in ((100, 20), (128, 32), (64, 1)):
        want = get_soft_overlong_punishment(max_len, cache)([[0] * n for n in lengths])
        np.testing.assert_allclose(np.asarray(soft_overlong_punishment(lengths, max_len, cache)), want,
                                   rtol=1e-6, atol=1e-7)
