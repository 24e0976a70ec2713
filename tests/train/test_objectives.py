"""Every registered objective trains through the same step; reference forward == precomputed."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxevo.config import load_config
from jaxevo.errors import ConfigError
from jaxevo.losses import PREFERENCE_LOSSES, register
from jaxevo.registry import RegistryError
from jaxevo.sharding import make_mesh
from jaxevo.train import OBJECTIVES, get_objective, register_objective, train
from jaxevo.train.builder import build_step
from jaxevo.train.config import ObjectiveSection, OptimSection, TrainConfig
from jaxevo.train.state import init_state
from jaxevo.train.step import finalize_metrics
from tests.train.helpers import make_step, pref_records, pretrained, sft_records


def test_registry_names():
    assert {"sft", "preference", "dpo", "evolve", "self_meta"} <= set(OBJECTIVES)
    assert OBJECTIVES["dpo"] is OBJECTIVES["preference"]
    with pytest.raises(ConfigError, match="unknown objective.name 'nope'; known: .*self_meta"):
        get_objective("nope")
    with pytest.raises(RegistryError, match="objective 'sft' is registered twice"):
        register_objective(OBJECTIVES["sft"])
    with pytest.raises(ConfigError, match="unknown objective.loss_type 'nope'"):
        OBJECTIVES["preference"].needs_reference(ObjectiveSection(loss_type="nope"))


def test_needs_reference_is_declared():
    pref, evolve = OBJECTIVES["preference"], OBJECTIVES["evolve"]
    assert pref.needs_reference(ObjectiveSection(loss_type="sigmoid"))
    assert not pref.needs_reference(ObjectiveSection(loss_type="simpo"))
    assert evolve.needs_reference(ObjectiveSection())
    assert not evolve.needs_reference(ObjectiveSection(hparams={"variant": "simpo"}))
    assert not OBJECTIVES["sft"].needs_reference(ObjectiveSection())
    assert not OBJECTIVES["self_meta"].needs_reference(ObjectiveSection())


def test_a_registered_loss_gets_what_it_declares(tmp_path):
    """A loss registered from outside: reference-free with lengths -> no reference pass, counts in."""
    seen = {}

    @register("test_avg_margin", needs_reference=False, needs_lengths=True)
    def avg_margin(c, r, rc=None, rr=None, *, beta=0.1, chosen_lengths=None, rejected_lengths=None):
        seen.update(ref=(rc, rr), lengths=chosen_lengths is not None and rejected_lengths is not None)
        ac, ar = c / chosen_lengths, r / rejected_lengths
        sg = jax.lax.stop_gradient
        return -jax.nn.log_sigmoid(beta * (ac - ar)), sg(beta * ac), sg(beta * ar)

    try:
        cfg = _cfg(tmp_path, "objective.name=preference", "objective.loss_type=test_avg_margin")
        res = train(cfg, pretrained=pretrained(0, dtype="float32"), records=pref_records(4))
    finally:
        PREFERENCE_LOSSES.remove("test_avg_margin")
    losses = [h["loss"] for h in res.history]
    assert res.steps == 3 and losses[-1] < losses[0]
    assert seen == {"ref": (None, None), "lengths": True}
    assert not (tmp_path / "reference_logps.npz").is_file()


def _cfg(tmp_path, *extra):
    return load_config(TrainConfig, None, [
        f"out_dir={tmp_path}", "steps=3", "batch_size=4", "micro_batch_size=2",
        "data.chat_template=false", "data.pad_to_multiple=8", "data.max_length=64",
        "optim.lr=1e-2", "checkpoint.export=false", "log.progress=false",
        "log.tensorboard=false", *extra])


SELF_ROWS = [{"prompt": f"add {i} {i}", "response": f"{i}", "feedback": "wrong, double it",
              "refined": f"{2 * i}"} for i in range(4)]


@pytest.mark.parametrize("extra,rows", [
    (["objective.name=evolve"], pref_records(4)),
    (["objective.name=self_meta"], SELF_ROWS),
    (["objective.name=preference", "objective.loss_type=orpo", "objective.nll_weight=1"], pref_records(4)),
    (["objective.name=sft", "data.packing=true", "batch_size=2", "micro_batch_size=1"], sft_records(12)),
    (["objective.name=dpo", "objective.precompute_ref=false"], pref_records(4)),  # ref forward per step
])
def test_objectives_train(tmp_path, extra, rows):
    res = train(_cfg(tmp_path, *extra), pretrained=pretrained(0, dtype="float32"), records=rows)
    if "data.packing=true" in extra:
        assert res.stats["packed_rows"] < res.stats["examples"] == 12
    losses = [h["loss"] for h in res.history]
    assert res.steps == 3 and all(np.isfinite(losses)) and losses[-1] < losses[0]
    ref_file = (tmp_path / "reference_logps.npz").is_file()
    assert ref_file == (extra[0] == "objective.name=evolve")  # orpo / self_meta need no reference


def test_reference_forward_matches_precomputed():
    kw = dict(objective_kw={"precompute_ref": True})
    step, state, stream = make_step("preference", pref_records(8), **kw)
    _, m_pre = step(state, stream.batch(0))
    # same step, with the frozen reference run inside the step instead
    pre = pretrained(0, dtype="float32")
    cfg = TrainConfig(batch_size=8, objective=ObjectiveSection(precompute_ref=False, name="preference"),
                      optim=OptimSection(lr=1e-2, schedule="constant", clip_norm=None))
    parts = build_step(cfg, pre.cfg, make_mesh((1, -1, 1)), jax.eval_shape(lambda: pre.params), 100)
    assert parts.needs_reference and parts.ref_forward
    st = init_state(pre.params, parts.tx, 0, parts.state_shardings)
    _, m_fwd = parts.step(st, stream.batch(0), pre.params)
    a, b = finalize_metrics(jax.device_get(m_pre)), finalize_metrics(jax.device_get(m_fwd))
    for k in ("loss", "grad_norm", "rewards/margins", "logps/chosen"):
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)
