"""Training works for every family: one SFT and one DPO step on a tiny config give the same losses
on 1 device and on an 8-device CPU mesh (data 2 x fsdp 2 x tensor 2, in a subprocess), and the
train step's log-probs (hidden state through the fused, soft-capped LM head) equal the model's
own log-softmax."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxevo.models.transformer import _all_logprobs
from jaxevo.train.step import forward_views
from tests.conftest import GOLDEN_TOKENS, random_params, subprocess_env, tiny_cfg

ROOT = Path(__file__).parents[2]
# The families whose layers differ from the Llama the trainer tests already cover.
FAMILIES = ["gemma3", "llama32", "mistral-sw", "phi3", "qwen3"]


@pytest.mark.heavy  # a subprocess per family, 1 and 8 devices: minutes; `pytest -m heavy`
@pytest.mark.parametrize("family", FAMILIES)
def test_sft_and_dpo_steps_equal_on_one_device_and_a_mesh(family, tmp_path):
    env = subprocess_env(devices=8)
    proc = subprocess.run([sys.executable, "-m", "tests.models._family_train_worker", str(tmp_path), family],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads((tmp_path / "families.json").read_text())
    for objective in ("sft", "preference"):
        one, many = res[f"{family}/{objective}/1"], res[f"{family}/{objective}/2x2x2"]
        for a, b in zip(one, many):
            # the loss to 1e-5; the gradient norm, a sum over every parameter reduced in another
            # order across 8 devices, to 1e-4 relative (measured: 1e-5)
            assert abs(a["loss"] - b["loss"]) <= 1e-5, (objective, a["loss"], b["loss"])
            assert abs(a["grad_norm"] - b["grad_norm"]) <= 1e-4 * a["grad_norm"], (objective, a, b)
            assert a["finite"] == b["finite"] == 1.0
        assert one[0]["loss"] != one[1]["loss"]  # the first step changed the model
        if objective == "preference":
            assert abs(one[1]["loss"] - np.log(2)) > 1e-3  # the policy left its reference


def test_train_logprobs_equal_model_logsoftmax():
    cfg = tiny_cfg("gemma3")  # final-logit soft-capping on, tied head, windowed layers
    params = random_params(cfg)
    tokens = jnp.asarray(GOLDEN_TOKENS[:1])
    labels = jnp.concatenate([tokens[:, 1:], jnp.full((1, 1), -100)], axis=1)
    view = {"tokens": tokens, "labels": labels, "segments": jnp.ones_like(tokens),
            "positions": jnp.arange(tokens.shape[1])[None]}
    tlp, mask, _, _ = forward_views(params, cfg, {"v": view}, ("v",), chunk=8, vocab_chunk=48)["v"]
    ref = _all_logprobs(params, tokens, jnp.ones_like(tokens), cfg=cfg)
    want = jnp.take_along_axis(ref[:, :-1], tokens[:, 1:, None], axis=-1)[..., 0]
    np.testing.assert_allclose(np.asarray(tlp[:, :-1]), np.asarray(want), atol=1e-5)
    assert bool(mask[0, :-1].all()) and not bool(mask[0, -1])
    jax.block_until_ready(tlp)
