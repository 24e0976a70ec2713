"""Shared helpers: load the TRL GRPO/RLOO goldens and evaluate jaxevo on them."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxevo.losses import group_advantages, policy_loss, rloo_advantages

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "golden"
GOLDEN_FILE = GOLDEN_DIR / "policy_losses.json"
RTOL = ATOL = 1e-6  # f32 on both sides; TRL's values are torch f32 on CPU


def load_golden() -> dict:
    golden = json.loads(GOLDEN_FILE.read_text())
    golden["inputs"]["rewards"] = [np.nan if r is None else r for r in golden["inputs"]["rewards"]]
    return golden


def load_generator():
    spec = importlib.util.spec_from_file_location("make_policy_goldens", GOLDEN_DIR / "make_policy_goldens.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def loss_case_id(case: dict) -> str:
    base = load_generator()._BASE
    return case["loss_type"] + "-" + "-".join(f"{k}={v}" for k, v in case["hparams"].items() if base[k] != v)


def close(actual, expected, what: str) -> None:
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected, np.float32), rtol=RTOL, atol=ATOL,
                               err_msg=what)


def check_loss_case(golden: dict, case: dict) -> None:
    inp = {k: np.asarray(v, np.float32) for k, v in golden["inputs"].items() if k not in ("rewards", "group_size")}
    hp = dict(case["hparams"])
    on_policy = hp.pop("on_policy")

    def f(logps):
        return policy_loss(case["loss_type"], logps, None if on_policy else inp["old_logps"], inp["ref_logps"],
                           inp["advantages"], inp["mask"], entropies=inp["entropies"], **hp)

    (loss, metrics), grad = jax.value_and_grad(f, has_aux=True)(jnp.asarray(inp["logps"]))
    close(loss, case["loss"], "loss")
    close(grad, case["grad"], "d loss / d logps")
    assert set(metrics) == set(case["metrics"]), (sorted(metrics), sorted(case["metrics"]))
    for name, value in case["metrics"].items():
        close(metrics[name], value, name)


def check_advantage_case(golden: dict, case: dict) -> None:
    rewards, g = np.asarray(golden["inputs"]["rewards"], np.float32), golden["inputs"]["group_size"]
    if case["kind"] == "grpo":
        adv = group_advantages(rewards, g, scale=case["option"])
    else:
        adv = rloo_advantages(rewards, g, normalize=case["option"])
    close(adv, case["advantages"], f"{case['kind']} {case['option']}")
