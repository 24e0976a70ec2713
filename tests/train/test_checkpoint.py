"""Resume invariance (restore in a new process), atomic saves, NaN stop, the `jaxevo train` CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxevo.cli import main
from jaxevo.config import load_config
from jaxevo.sharding import make_mesh, param_shardings
from jaxevo.train import TrainConfig, train
from jaxevo.train.checkpoint import Checkpointer
from jaxevo.train.config import OptimSection
from jaxevo.train.optim import make_optimizer
from jaxevo.train.state import abstract_state, state_shardings
from jaxevo.weights.load import load_pretrained
from tests.conftest import subprocess_env
from tests.train.helpers import (pref_records, pretrained, sft_records, tiny_cfg, write_jsonl,
                                 write_tiny_model)
from tests.train.test_mesh import ROOT, run_worker


def resume_config(out_dir) -> TrainConfig:
    return load_config(TrainConfig, None, [
        f"out_dir={out_dir}", "steps=6", "batch_size=4", "micro_batch_size=2", "seed=1",
        "data.chat_template=false", "data.pad_to_multiple=8", "data.max_length=32",
        "optim.lr=1e-2", "optim.warmup_steps=2", "optim.weight_decay=0.01",
        "checkpoint.export=false", "log.progress=false", "log.tensorboard=false"])


def test_resume_in_new_process_is_identical(tmp_path):
    """6 steps straight == 3 steps, checkpoint, restore in a fresh process, 3 more steps."""
    full = train(resume_config(tmp_path / "a"), pretrained=pretrained(0, dtype="float32"),
                 records=sft_records(12))
    assert full.steps == 6
    # run b also saves (asynchronously) at step 2 and keeps training on the donated state
    cfg_b = resume_config(tmp_path / "b")
    cfg_b = cfg_b.replace(checkpoint=cfg_b.checkpoint.__class__(every=2, keep=5, export=False))
    part = train(cfg_b, pretrained=pretrained(0, dtype="float32"), records=sft_records(12), stop_at=3)
    ck = Checkpointer(tmp_path / "b" / "checkpoints")
    assert part.steps == 3 and ck.all_steps() == [2, 3]
    # the mid-run checkpoint holds exactly the step-2 params (param_norm logged at step 2)
    mesh = make_mesh((1, -1, 1))
    tx, _ = make_optimizer(cfg_b.optim, 6)
    ap = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), part.state.params)
    st2, meta2 = ck.restore(abstract_state(ap, tx, state_shardings(param_shardings(tiny_cfg(), mesh), tx, ap, mesh)), 2)
    ck.close()
    norm2 = float(np.sqrt(sum(np.sum(np.asarray(x, np.float64) ** 2) for x in jax.tree.leaves(st2.params))))
    assert int(st2.step) == 2 and meta2["data_position"]["examples_seen"] == 8
    np.testing.assert_allclose(norm2, full.history[1]["param_norm"], rtol=1e-6)
    run_worker("resume", tmp_path / "w", str(tmp_path / "b"), devices=1)
    with np.load(tmp_path / "w" / "params.npz") as z:
        assert int(z["__step__"]) == 6
        ref = {jax.tree_util.keystr(k): np.asarray(v) for k, v in
               jax.tree_util.tree_flatten_with_path(jax.device_get(full.state.params))[0]}
        # Bitwise equal in every run so far; the tolerance only absorbs a possible change of
        # summation order in XLA CPU's parallel scatter-add (embedding gradient) across processes.
        for k, v in ref.items():
            np.testing.assert_allclose(z[k], v, rtol=0, atol=1e-6, err_msg=k)
    # metrics of the resumed half continue the same curve
    rows = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([r["loss"] for r in rows], [h["loss"] for h in full.history], rtol=1e-6)


def test_interrupted_save_keeps_last_good_checkpoint(tmp_path):
    ck_dir = tmp_path / "ck"
    proc = run_worker("atomic", tmp_path, str(ck_dir), devices=1, check=False)
    assert proc.returncode == 17, proc.stderr[-3000:]  # died inside the commit of step 2
    assert any("tmp" in p.name for p in ck_dir.iterdir())  # the half-written step is left aside
    ck = Checkpointer(ck_dir)
    assert ck.latest_step() == 1 and ck.all_steps() == [1]
    state, meta = ck.restore({"w": jax.ShapeDtypeStruct((1000,), jnp.float32)})
    np.testing.assert_array_equal(np.asarray(state["w"]), np.arange(1000.0))
    assert meta == {"step": 1}
    ck.close()


def _cli(*args, cwd=ROOT):
    env = subprocess_env()
    return subprocess.run([sys.executable, "-m", "jaxevo.cli", "train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


def test_cli_dpo_end_to_end_then_nan_stop(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "pairs.jsonl", pref_records(8))
    out = tmp_path / "run"
    common = [f"model.path={tiny_model_dir}", f"data.path={data}", f"out_dir={out}",
              "data.chat_template=false", "data.pad_to_multiple=8", "batch_size=4",
              "micro_batch_size=2", "model.dtype=float32", "optim.lr=5e-3", "checkpoint.every=2"]
    proc = _cli("--config", str(ROOT / "configs" / "train_dpo_demo.yaml"), *common, "steps=4")
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert summary["steps"] == 4 and summary["final_metrics"]["rewards/accuracies"] >= 0.5
    # what the step ran on: the suite's pinned path (tests/conftest.py), as the environment set it
    assert summary["cpu_paths"]["train step dots (E32 F64 float32)"] == "xla (env)"
    assert "train preference" in proc.stderr  # tqdm bar
    assert "INFO jaxevo.train.builder: data: {'examples': 8, " in proc.stderr  # the command's INFO lines
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert {"loss", "rewards/accuracies", "rewards/margins", "logps/chosen", "tokens_per_s", "lr",
            "grad_norm"} <= set(rows[0])
    assert (out / "reference_logps.npz").is_file()
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    # the export is a jaxevo checkpoint directory every command can load
    exported = load_pretrained(out / "final")
    assert json.loads((out / "final" / "jaxevo.json").read_text())["model_dir"] == "model"
    ck = Checkpointer(out / "checkpoints")
    assert ck.all_steps() == [2, 4]
    ck.close()

    # Resume the same run with an absurd learning rate: step 5 diverges, the run stops with a clear
    # error, and checkpoint 4 is untouched.
    proc = _cli("--config", str(ROOT / "configs" / "train_dpo_demo.yaml"), *common, "steps=8",
                "optim.lr=1e30", "optim.clip_norm=null")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "training diverged at step 5" in proc.stderr
    assert "last good checkpoint is step 4" in proc.stderr
    ck = Checkpointer(out / "checkpoints")
    assert ck.latest_step() == 4
    cfg = exported.cfg
    mesh = make_mesh((1, 1, 1), jax.devices()[:1])
    tx, _ = make_optimizer(OptimSection(), 8)
    ap = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), exported.params)
    state, meta = ck.restore(abstract_state(ap, tx, state_shardings(param_shardings(cfg, mesh), tx, ap, mesh)))
    ck.close()
    assert int(state.step) == 4 and meta["data_position"]["examples_seen"] == 16
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 jax.device_get(state.params), jax.device_get(exported.params))


def test_cli_errors(tmp_path, tiny_model_dir, capsys):
    cfg = str(ROOT / "configs" / "train_sft_demo.yaml")
    base = [f"model.path={tiny_model_dir}", f"out_dir={tmp_path / 'r'}", "data.chat_template=false"]
    assert main(["train", "--config", cfg, *base, f"data.path={tmp_path / 'missing.jsonl'}"]) == 2
    assert "data file not found" in capsys.readouterr().err
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "c"}])
    assert main(["train", "--config", cfg, *base, f"data.path={bad}"]) == 2
    assert "missing or non-string field(s) ['response']" in capsys.readouterr().err
    long = write_jsonl(tmp_path / "long.jsonl", [{"prompt": "x" * 300, "response": "y"}])
    assert main(["train", "--config", cfg, *base, f"data.path={long}", "data.max_length=64",
                 "data.truncation=error"]) == 2
    assert "> data.max_length=64" in capsys.readouterr().err
    assert main(["train", "--config", cfg, "optim.learnig_rate=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'optim.learnig_rate'" in err and "clip_norm, eps, lr," in err
