"""Every registered objective trains through the same step; reference forward == precomputed."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxevo.train import OBJECTIVES, train
from jaxevo.config import load_config
from jaxevo.train.config import TrainConfig
from jaxevo.train.step import finalize_metrics
from tests.train.helpers import make_step, pref_records, pretrained, sft_records


def test_registry_names():
    assert {"sft", "preference", "dpo", "evolve", "self_meta"} <= set(OBJECTIVES)
    assert OBJECTIVES["dpo"] is OBJECTIVES["preference"]


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
    from jaxevo.sharding import make_mesh, param_shardings
    from jaxevo.train.config import ObjectiveSection, OptimSection
    from jaxevo.train.objectives import get_objective
    from jaxevo.train.optim import make_optimizer
    from jaxevo.train.state import init_state, state_shardings
    from jaxevo.train.step import make_train_step

    pre = pretrained(0, dtype="float32")
    mesh = make_mesh((1, -1, 1))
    p_sh = param_shardings(pre.cfg, mesh)
    tx, sched = make_optimizer(OptimSection(lr=1e-2, schedule="constant", clip_norm=None), 100)
    sh = state_shardings(p_sh, tx, jax.eval_shape(lambda: pre.params), mesh)
    st = init_state(pre.params, tx, 0, sh)
    fwd = make_train_step(pre.cfg, get_objective("preference"), ObjectiveSection(precompute_ref=False),
                          tx, sched, mesh=mesh, state_shardings=sh, ref_forward=True,
                          ref_shardings=p_sh)
    _, m_fwd = fwd(st, stream.batch(0), pre.params)
    a, b = finalize_metrics(jax.device_get(m_pre)), finalize_metrics(jax.device_get(m_fwd))
    for k in ("loss", "grad_norm", "rewards/margins", "logps/chosen"):
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)
