"""EVOLVE's SRPO-style variant (METHODS.md §2.2 (b), objective `evolve_srpo`): the rejected refine
view is "degrade y_w into y_l" (y_l | x, y_w, z). Its train-step loss equals a hand computation
from an independent forward over token sequences built here, not by the trainer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxevo.sharding import make_mesh
from jaxevo.templates import REFINE_TEMPLATE
from jaxevo.train.batches import BatchStream, tokenize_views
from jaxevo.train.builder import build_step
from jaxevo.train.config import ObjectiveSection, OptimSection, TrainConfig
from jaxevo.train.state import init_state
from jaxevo.train.step import finalize_metrics
from tests.conftest import forward
from tests.train.helpers import pref_records, pretrained

BETA = 2.0


def _logps(params, cfg, seqs: list[tuple[list[int], list[int]]]) -> np.ndarray:
    """[N] log p(response | context) of each (context, response): one plain causal forward over
    the right-padded batch (padding after a sequence cannot change it), summed over its response."""
    t = max(len(c) + len(r) for c, r in seqs)
    tokens = np.zeros((len(seqs), t), np.int32)
    for i, (c, r) in enumerate(seqs):
        tokens[i, :len(c) + len(r)] = c + r
    lp = np.asarray(jax.nn.log_softmax(jnp.asarray(forward(cfg, params, tokens), jnp.float32), -1))
    return np.array([sum(lp[i, len(c) - 1 + j, tok] for j, tok in enumerate(r)) for i, (c, r) in enumerate(seqs)])


def _step_loss(name: str, records, pol, ref) -> float:
    cfg = TrainConfig(batch_size=len(records), seed=0,
                      objective=ObjectiveSection(name=name, beta=BETA, precompute_ref=False),
                      optim=OptimSection(lr=1e-2, schedule="constant", clip_norm=None))
    parts = build_step(cfg, pol.cfg, make_mesh((1, -1, 1)), jax.eval_shape(lambda: pol.params), 10)
    data = tokenize_views(records, parts.objective.views, pol.tokenizer, max_length=256,
                          chat_template=False, pad_to_multiple=8,
                          templates={"refine_template": REFINE_TEMPLATE, "feedback_template": ""})
    state = init_state(pol.params, parts.tx, 0, parts.state_shardings)
    _, m = parts.step(state, BatchStream(data, len(records), seed=0, pad_to_multiple=8).batch(0), ref.params)
    return float(finalize_metrics(jax.device_get(m))["loss"])


def test_srpo_variant_loss_is_the_hand_computed_swapped_context_loss():
    records = pref_records(4)
    pol, ref = pretrained(0, dtype="float32"), pretrained(1, dtype="float32")  # reference != policy
    tok = pol.tokenizer
    eos = tok.eos_token_id

    def ids(text):
        return tok(text, add_special_tokens=False)["input_ids"]

    seqs = []
    for r in records:
        x, yw, yl = r["prompt"], r["chosen"], r["rejected"]
        z_l = REFINE_TEMPLATE.format(prompt=x, previous=yl)  # "rewrite y_l"
        z_w = REFINE_TEMPLATE.format(prompt=x, previous=yw)  # SRPO's rejected branch: "degrade y_w"
        # y_w|x, y_l|x, y_w|x,y_l,z, y_l|x,y_w,z (SRPO), y_l|x,y_l,z (EVOLVE's "keep y_l")
        seqs += [(ids(c), ids(y) + [eos]) for c, y in ((x, yw), (x, yl), (z_l, yw), (z_w, yl), (z_l, yl))]
    d = (_logps(pol.params, pol.cfg, seqs) - _logps(ref.params, ref.cfg, seqs)).reshape(len(records), 5)

    def log_sigmoid(x):
        return -np.log1p(np.exp(-x))

    direct = -log_sigmoid(BETA * (d[:, 0] - d[:, 1]))
    refine = -log_sigmoid(BETA * (d[:, 2] - d[:, 3]))
    keep = -log_sigmoid(BETA * (d[:, 2] - d[:, 4]))
    want_srpo = np.mean(direct) + np.mean(refine)
    want_evolve = np.mean(direct) + np.mean(keep)  # the `evolve` objective's loss
    assert abs(want_srpo - want_evolve) > 1e-3  # the swapped context changes the loss here
    assert _step_loss("evolve_srpo", records, pol, ref) == pytest.approx(want_srpo, rel=1e-5, abs=1e-5)
