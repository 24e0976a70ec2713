"""Two local `jax.distributed` processes (4 CPU devices each, gloo collectives) == one process
with 8 devices: SFT + DPO losses, samples, final params, checkpoints and the export.

Save on 8 devices / restore on 4 and 1 is already covered by
`tests/train/test_mesh.py::test_restore_onto_other_meshes`; here the checkpoint *written by two
processes* is restored in this (single) process.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import subprocess_env

# Two real processes with a shared coordinator: minutes on 2 cores (`bash scripts/test.sh -m heavy`).
pytestmark = pytest.mark.heavy

ROOT = Path(__file__).parents[2]
WORKER = "tests.scale._mp_worker"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(devices: int, **extra) -> dict:
    e = subprocess_env(devices)
    for k in ("JAXEVO_COORDINATOR", "JAXEVO_NUM_PROCESSES", "JAXEVO_PROCESS_ID"):
        e.pop(k, None)
    e.update({k: str(v) for k, v in extra.items()})
    return e


def run_one_and_two(worker: str, one: Path, two: Path, *args: str) -> None:
    """Run `python -m worker DIR *args` as one process with 8 CPU devices (DIR = one) and, at the
    same time, as two `jax.distributed` processes with 4 each (DIR = two); raise with the tail of
    a failed worker's log."""
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-m", worker, str(one), *args], cwd=ROOT, env=env(8),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)]
    for i in range(2):
        procs.append(subprocess.Popen(
            [sys.executable, "-m", worker, str(two), *args], cwd=ROOT,
            env=env(4, JAXEVO_COORDINATOR=f"127.0.0.1:{port}", JAXEVO_NUM_PROCESSES=2,
                    JAXEVO_PROCESS_ID=i),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=900)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, log in zip(procs, logs):
        if p.returncode:
            lines = [ln for ln in log.splitlines() if "[Gloo]" not in ln]
            raise AssertionError(f"worker {p.args} failed ({p.returncode}):\n" + "\n".join(lines[-60:]))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(single-process dir, two-process dir), both run in parallel."""
    one = tmp_path_factory.mktemp("one")
    two = tmp_path_factory.mktemp("two")
    run_one_and_two(WORKER, one, two)
    return one, two


def test_two_processes_equal_one(runs):
    one, two = runs
    a = json.loads((one / "proc0.json").read_text())
    b0 = json.loads((two / "proc0.json").read_text())
    b1 = json.loads((two / "proc1.json").read_text())
    assert (a["processes"], a["local_devices"], a["devices"]) == (1, 8, 8)
    assert (b0["processes"], b0["local_devices"], b0["devices"]) == (2, 4, 8)
    assert b1["process"] == 1 and b1["devices"] == 8
    # every process ends with the same view of the run
    for k in ("sft_losses", "dpo_losses", "dpo_margins", "samples", "greedy", "params_digest"):
        assert b0[k] == b1[k], k
    # ... and it equals the single-process run (only the reduction order differs: gloo vs local)
    assert a["sft_steps"] == b0["sft_steps"] == 4 and a["dpo_steps"] == b0["dpo_steps"] == 3
    for k in ("sft_losses", "dpo_losses", "dpo_margins"):
        np.testing.assert_allclose(b0[k], a[k], rtol=1e-5, atol=1e-5, err_msg=k)
    assert a["sft_losses"][-1] < a["sft_losses"][0]  # it really trained
    assert a["greedy"] == b0["greedy"]
    for pa, pb in zip(a["samples"], b0["samples"]):
        for ca, cb in zip(pa, pb):
            assert ca["ids"] == cb["ids"] and ca["finish"] == cb["finish"]
            assert abs(ca["logprob"] - cb["logprob"]) < 1e-4
    pa, pb = np.load(one / "params.npz"), np.load(two / "params.npz")
    assert sorted(pa.files) == sorted(pb.files) and len(pa.files) > 10
    for k in pa.files:
        np.testing.assert_allclose(pb[k], pa[k], rtol=0, atol=1e-5, err_msg=k)
    assert not (two / "params1.npz").exists()  # main_only: process 1 wrote no params file


def _restore_params(ckpt_dir: Path, step: int):
    """The params of a train-state checkpoint, restored onto this process's first device."""
    import jax

    from jaxevo.sharding import make_mesh, param_shardings
    from jaxevo.train.checkpoint import Checkpointer
    from jaxevo.train.config import OptimSection
    from jaxevo.train.optim import make_optimizer
    from jaxevo.train.state import abstract_state, state_shardings
    from tests.train.helpers import tiny_cfg, tiny_params

    cfg = tiny_cfg(dtype="float32")
    mesh = make_mesh((1, 1, 1), jax.devices()[:1])
    ap = jax.eval_shape(lambda: tiny_params(cfg))
    tx, _ = make_optimizer(OptimSection(lr=1e-2, warmup_steps=1), 4)
    target = abstract_state(ap, tx, state_shardings(param_shardings(cfg, mesh), tx, ap, mesh))
    ck = Checkpointer(ckpt_dir)
    try:
        state, meta = ck.restore(target, step)
    finally:
        ck.close()
    return jax.device_get(state.params), meta


def test_two_process_checkpoint_and_export_restore_on_one_device(runs):
    import jax

    from jaxevo.weights.load import load_pretrained

    one, two = runs
    for step in (2, 4):
        pa, ma = _restore_params(one / "runs/sft/checkpoints", step)
        pb, mb = _restore_params(two / "runs/sft/checkpoints", step)
        assert ma["step"] == mb["step"] == step
        for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
            np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=0, atol=1e-5)
    final = np.load(two / "params.npz")
    restored, _ = _restore_params(two / "runs/sft/checkpoints", 4)
    flat = {jax.tree_util.keystr(k): np.asarray(v)
            for k, v in jax.tree_util.tree_flatten_with_path(restored)[0]}
    for k, v in flat.items():
        np.testing.assert_array_equal(v, final["sft/" + k])  # the checkpoint is the final state
    # the export written by process 0 only loads and equals the single-process export
    ea = load_pretrained(str(one / "runs/sft/final"), dtype="float32")
    eb = load_pretrained(str(two / "runs/sft/final"), dtype="float32")
    for x, y in zip(jax.tree.leaves(ea.params), jax.tree.leaves(eb.params)):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=0, atol=1e-5)
    assert not list((two / "runs/sft").glob("final.tmp-export*"))
