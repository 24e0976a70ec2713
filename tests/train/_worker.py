"""Subprocess side of the multi-device / multi-process trainer tests.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m tests.train._worker MODE OUT [ARGS]

MODE mesh:    5 DPO steps on 1 device and on the (2,2,2) mesh -> OUT/mesh.json (loss curves)
MODE restore: 2 steps on 8 devices, save; restore onto 4 devices, save; restore onto 1 -> OUT/restore.json
MODE resume:  continue `train()` in run dir ARGS[0] -> OUT/params.npz
MODE atomic:  save step 1, die in the middle of saving step 2 (ARGS[0] = checkpoint dir)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint._src.path.atomicity as atomicity
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxevo.sharding import make_mesh, param_shardings
from jaxevo.train import train
from jaxevo.train.checkpoint import Checkpointer
from jaxevo.train.config import OptimSection
from jaxevo.train.optim import make_optimizer
from jaxevo.train.precision import hashed_bits, rounding_key
from jaxevo.train.state import abstract_state, state_shardings
from jaxevo.train.step import finalize_metrics
from tests.train.helpers import make_step, pref_records, pretrained, sft_records, tiny_cfg
from tests.train.test_checkpoint import resume_config


def _flat(tree):
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in
            jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]}


def mesh_mode(out: Path):
    curves = {}
    for name, shape, devs in (("1", (1, 1, 1), jax.devices()[:1]), ("2x2x2", (2, 2, 2), jax.devices())):
        mesh = make_mesh(shape, devs)
        step, state, stream = make_step("preference", pref_records(8), num_micro=2, mesh=mesh,
                                        optim=OptimSection(lr=1e-2, schedule="cosine", warmup_steps=1))
        curve = []
        for i in range(5):
            state, m = step(state, stream.batch(i))
            curve.append(finalize_metrics(jax.device_get(m)))
        spec = str(state.params["layers"]["mlp"]["up_proj"].sharding.spec)
        curves[name] = {"curve": curve, "devices": len(mesh.devices.flat), "up_proj_spec": spec}
    # the stochastic rounding's bits of a leaf laid out over the 8 devices, against one device
    sharded = jax.jit(lambda k: hashed_bits((64, 48), k),
                      out_shardings=NamedSharding(make_mesh((2, 2, 2)), P(("data", "fsdp"), "tensor")))
    curves["bits_same_on_mesh"] = bool(np.array_equal(np.asarray(sharded(rounding_key(3))),
                                                      np.asarray(hashed_bits((64, 48), rounding_key(3)))))
    (out / "mesh.json").write_text(json.dumps(curves))


def restore_mode(out: Path):
    opt = OptimSection(lr=1e-2, schedule="constant")
    mesh8 = make_mesh((2, 2, 2))
    step, state, stream = make_step("sft", sft_records(8), mesh=mesh8, optim=opt)
    for i in range(2):
        state, _ = step(state, stream.batch(i))
    ref = _flat(state)
    cfg = tiny_cfg()
    tx, _ = make_optimizer(opt, 100)
    result = {}
    src = Checkpointer(out / "ck8", keep=2)
    src.save(2, state, {"mesh": "8"})
    src.close()
    # 8 devices -> ck8 -> 4 devices -> ck4 -> 1 device
    for name, shape, devs, src_dir, nxt in (("4", (1, 2, 2), jax.devices()[:4], "ck8", "ck4"),
                                            ("1", (1, 1, 1), jax.devices()[:1], "ck4", None)):
        mesh = make_mesh(shape, devs)
        p_sh = param_shardings(cfg, mesh)
        abstract_params = jax.eval_shape(lambda: jax.tree.map(lambda x: x, state.params))
        target = abstract_state(abstract_params, tx, state_shardings(p_sh, tx, abstract_params, mesh))
        src = Checkpointer(out / src_dir, keep=2)
        restored, meta = src.restore(target)
        src.close()
        got = _flat(restored)
        devices = {len(x.sharding.device_set) for x in jax.tree.leaves(restored)}
        result[name] = {"max_diff": max(float(np.max(np.abs(got[k] - ref[k]))) if got[k].size else 0.0
                                        for k in ref),
                        "devices": sorted(devices), "meta": meta,
                        "same_keys": sorted(got) == sorted(ref)}
        if nxt:
            ck = Checkpointer(out / nxt, keep=2)
            ck.save(2, restored, {"mesh": name})
            ck.close()
    (out / "restore.json").write_text(json.dumps(result))


def resume_mode(out: Path, run_dir: str):
    res = train(resume_config(run_dir), pretrained=pretrained(0, dtype="float32"),
                records=sft_records(12))
    np.savez(out / "params.npz", **_flat(res.state.params), __step__=res.steps)


def atomic_mode(out: Path, ck_dir: str):
    ck = Checkpointer(ck_dir, keep=3)
    ck.save(1, {"w": jnp.arange(1000.0)}, {"step": 1})
    ck.wait()

    async def die(self):  # the process is killed after writing step 2, before its commit
        os._exit(17)

    atomicity.AtomicRenameTemporaryPath.finalize = die
    ck.save(2, {"w": jnp.zeros(1000)}, {"step": 2})
    ck.wait()
    os._exit(0)  # not reached


if __name__ == "__main__":
    mode, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    {"mesh": mesh_mode, "restore": restore_mode, "resume": resume_mode,
     "atomic": atomic_mode}[mode](out, *sys.argv[3:])
