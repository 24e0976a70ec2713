"""Shared helpers: load the TRL goldens and evaluate jaxevo on them."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from jaxevo.losses import finalize_metrics, preference_loss, preference_metrics

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "golden"
GOLDEN_FILE = GOLDEN_DIR / "preference_losses.json"
RTOL = ATOL = 1e-6


def load_golden() -> dict:
    return json.loads(GOLDEN_FILE.read_text())


def load_generator():
    spec = importlib.util.spec_from_file_location("make_preference_goldens", GOLDEN_DIR / "make_preference_goldens.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def case_id(case: dict) -> str:
    return case["loss_type"] + "-" + "-".join(f"{k}={v}" for k, v in case["hparams"].items())


def jax_case(golden: dict, case: dict):
    inp = {k: jnp.asarray(np.asarray(v, np.float32)) for k, v in golden["inputs"].items()}
    hp = dict(case["hparams"])
    if case["lengths_used"]:
        hp.update(chosen_lengths=inp["chosen_lengths"], rejected_lengths=inp["rejected_lengths"])
    return preference_loss(
        case["loss_type"], inp["chosen_logps"], inp["rejected_logps"],
        inp["ref_chosen_logps"], inp["ref_rejected_logps"], **hp,
    ), inp


def check_case(golden: dict, case: dict) -> None:
    (losses, cr, rr), inp = jax_case(golden, case)
    close = lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b, np.float32), rtol=RTOL, atol=ATOL)  # noqa: E731
    close(jnp.mean(losses), case["loss_mean"])
    if "losses" in case:
        close(losses, case["losses"])
        close(cr, case["chosen_rewards"])
        close(rr, case["rejected_rewards"])
    if "metrics" in case:
        m = finalize_metrics(preference_metrics(cr, rr, inp["chosen_logps"], inp["rejected_logps"]))
        for name, value in m.items():
            close(value, case["metrics"][name])
