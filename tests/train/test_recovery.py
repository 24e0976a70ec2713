"""What `train` does when its out_dir is not what it expects: held by another process, trained with
another config, holding a damaged checkpoint, on a disk that refuses a save, stopped by Ctrl-C."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
import yaml

from jaxevo.config import load_config
from jaxevo.dirlock import DirLock, DirLockedError
from jaxevo.errors import ConfigError
from jaxevo.train import TrainConfig, train
from jaxevo.train.checkpoint import Checkpointer
from jaxevo.train.loop import _diverged, _GrowthWatch
from tests.conftest import subprocess_env
from tests.train.helpers import pretrained, sft_records, write_jsonl, write_tiny_model

ROOT = Path(__file__).resolve().parents[2]


def cfg_for(out, *extra) -> TrainConfig:
    return load_config(TrainConfig, None, [
        f"out_dir={out}", "steps=8", "batch_size=4", "seed=2", "data.chat_template=false",
        "data.pad_to_multiple=8", "data.max_length=32", "optim.lr=1e-2", "checkpoint.every=2",
        "checkpoint.keep=5", "checkpoint.export=false", "log.progress=false",
        "log.tensorboard=false", *extra])


def run(cfg, **kw):
    return train(cfg, pretrained=pretrained(0, dtype="float32"), records=sft_records(12), **kw)


def flat(params) -> dict[str, np.ndarray]:
    return {jax.tree_util.keystr(k): np.asarray(v)
            for k, v in jax.tree_util.tree_flatten_with_path(jax.device_get(params))[0]}


# ----------------------------------------------------------------------------- the lock
def hold_lock(directory: Path) -> subprocess.Popen:
    """Another process holding ``directory``'s lock until killed."""
    code = ("import sys, time; from jaxevo.dirlock import DirLock; "
            f"DirLock({str(directory)!r}, 'test holder').acquire(); print('held', flush=True); "
            "time.sleep(600)")
    p = subprocess.Popen([sys.executable, "-c", code], env=subprocess_env(devices=1), cwd=ROOT,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_second_writer_is_refused_with_the_holder_then_a_dead_holder_is_taken_over(tmp_path):
    out = tmp_path / "run"
    holder = hold_lock(out)
    try:
        model = write_tiny_model(tmp_path / "model")
        data = write_jsonl(tmp_path / "d.jsonl", sft_records(8))
        proc = subprocess.run(
            [sys.executable, "-m", "jaxevo.cli", "train", "--config",
             str(ROOT / "configs" / "train_sft_demo.yaml"), f"model.path={model}",
             f"data.path={data}", f"out_dir={out}", "data.chat_template=false"],
            env=subprocess_env(devices=1), cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert f"in use by PID {holder.pid} on host {socket.gethostname()}" in proc.stderr
        assert "test holder" in proc.stderr and "Traceback" not in proc.stderr
        assert not (out / "config.yaml").exists()  # refused before writing anything
    finally:
        holder.kill()
        holder.wait()
    with DirLock(out, "taker"):  # SIGKILLed holder: the kernel dropped its flock
        assert json.loads((out / ".jaxevo.lock").read_text())["pid"] == os.getpid()


def test_lock_without_flock_trusts_the_pid(tmp_path, monkeypatch):
    """File systems without flock: a live PID on this host keeps the lock, a dead one's is taken."""
    import errno

    import jaxevo.dirlock as dl

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(dl.fcntl, "flock", no_flock)
    d = tmp_path / "nfs"
    d.mkdir()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        (d / ".jaxevo.lock").write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname(),
                                                    "command": "jaxevo evolve", "since": 0}))
        with pytest.raises(DirLockedError, match=f"PID {sleeper.pid} on host"):
            DirLock(d).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    with DirLock(d, "taker"):  # its holder is gone now
        assert json.loads((d / ".jaxevo.lock").read_text())["pid"] == os.getpid()
    assert (d / ".jaxevo.lock").read_text() == ""  # released: no holder named


# ----------------------------------------------------------------------------- changed config
def test_resume_refuses_a_changed_config_and_records_an_allowed_change(tmp_path, caplog):
    out = tmp_path / "r"
    run(cfg_for(out), stop_at=2)
    for bad, key in ((["seed=3"], "seed: 2 -> 3"), (["data.max_length=24"], "data.max_length"),
                     (["objective.name=evolve"], "objective.name")):
        with pytest.raises(ConfigError, match=key):
            run(cfg_for(out, *bad))
    assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == 2  # record untouched
    assert not (out / "config_changes.jsonl").exists()
    # logging keys change silently; the learning rate is allowed and recorded with its step
    with caplog.at_level(logging.WARNING):
        res = run(cfg_for(out, "log.every=2", "optim.lr=5e-3"), stop_at=4)
    assert res.steps == 4
    rows = [json.loads(x) for x in (out / "config_changes.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["changed"] == {"optim.lr": [1e-2, 5e-3]}
    assert rows[0]["from_step"] == 2
    assert yaml.safe_load((out / "config.yaml").read_text())["optim"]["lr"] == 5e-3
    assert "resuming from step 2 of 8" in caplog.text and "optim.lr: 0.01 -> 0.005" in caplog.text


# ----------------------------------------------------------------------------- damaged checkpoints
# Orbax's failed read of the damaged checkpoint can leave a callback for its closed event loop
# ("Exception ignored in: None ... Event loop is closed"; pyproject.toml's filterwarnings has the
# rest of that noise).
@pytest.mark.filterwarnings("ignore:Exception ignored in. None:pytest.PytestUnraisableExceptionWarning")
def test_damaged_checkpoints_fall_back_to_the_newest_good_one(tmp_path, caplog):
    """Checkpoints 2, 4, 6 on disk; 6 lost a data file, 4 its metadata: the rerun resumes from 2,
    says why, and ends bitwise where an uninterrupted run ends (metrics without duplicates)."""
    straight = run(cfg_for(tmp_path / "straight"))
    out = tmp_path / "r"
    run(cfg_for(out), stop_at=6)
    biggest = max((out / "checkpoints/6/state/ocdbt.process_0/d").iterdir(),
                  key=lambda p: p.stat().st_size)
    biggest.unlink()
    (out / "checkpoints/4/state/_METADATA").unlink()
    with caplog.at_level(logging.WARNING):
        res = run(cfg_for(out))
    assert res.steps == 8
    assert "resuming from step 2 of 8" in caplog.text and "steps 6, 4 skipped: damaged" in caplog.text
    assert sorted(p.name.split("-")[0] for p in (out / "checkpoints_damaged").iterdir()) == ["4", "6"]
    a, b = flat(straight.state.params), flat(res.state.params)
    for k in a:
        np.testing.assert_array_equal(b[k], a[k], err_msg=k)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 9))
    np.testing.assert_allclose([r["loss"] for r in rows], [h["loss"] for h in straight.history],
                               rtol=1e-6)


def test_no_checkpoint_restores_names_each(tmp_path, monkeypatch):
    out = tmp_path / "r"
    run(cfg_for(out), stop_at=2)

    def oom(self, *a, **k):
        raise MemoryError("out of host memory")
    with monkeypatch.context() as m:  # running out of memory is not a damaged checkpoint
        m.setattr(Checkpointer, "restore", oom)
        with pytest.raises(MemoryError):
            run(cfg_for(out))
    assert (out / "checkpoints/2").is_dir() and not (out / "checkpoints_damaged").exists()
    (out / "checkpoints/2/state/_METADATA").unlink()
    with pytest.raises(ConfigError, match=r"no checkpoint restores.*step 2: \w+"):
        run(cfg_for(out))


# ----------------------------------------------------------------------------- a disk that refuses
def test_a_failed_save_ends_the_run_at_once_with_one_line(tmp_path):
    """A file-size limit (EFBIG, the stand-in for a full disk a test cannot make) fails the step-2
    checkpoint: the run stops by step 4, one line names the folder and the cause, no temp folder."""
    out = tmp_path / "r"
    code = f"""
import resource, signal, sys
sys.argv = ["jaxevo"]
from tests.train.test_recovery import cfg_for, run
from jaxevo.errors import JaxevoError
cfg = cfg_for({str(out)!r})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))
try:
    run(cfg)
except JaxevoError as e:
    print("ERROR:", e); sys.exit(2)
"""
    env = subprocess_env(devices=1, JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jcache"))
    p = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 2, (p.stdout + p.stderr)[-3000:]
    line = [x for x in p.stdout.splitlines() if x.startswith("ERROR:")][0]
    assert f"cannot save a checkpoint in {out / 'checkpoints'}: file too large" in line
    assert "no checkpoint was completed" in line
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) <= 4
    assert not list((out / "checkpoints").glob("*orbax-checkpoint-tmp*"))


# ----------------------------------------------------------------------------- Ctrl-C, messages
def test_ctrl_c_saves_a_checkpoint_and_says_how_to_resume(tmp_path):
    run_dir = tmp_path / "r"
    p = subprocess.Popen([sys.executable, "-m", "tests.scale._preempt_worker", str(run_dir), "slow"],
                         cwd=ROOT, env=subprocess_env(devices=1), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not (run_dir / "steps.txt").exists() or len((run_dir / "steps.txt").read_text().split()) < 3:
        assert p.poll() is None and time.time() < deadline, p.communicate()[0][-3000:]
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 130, out[-3000:]
    ck = Checkpointer(run_dir / "checkpoints")
    latest = ck.latest_step()
    ck.close()
    assert latest is not None and 3 <= latest < 8
    assert f"checkpoint of step {latest} saved in {run_dir / 'checkpoints'}; rerun the same " \
           f"command to resume" in out


def test_divergence_names_the_key_of_the_phase_and_slow_growth_warns(caplog):
    e = _diverged(5, {"loss": float("nan"), "grad_norm": 1.0, "param_norm": 1.0}, 4, Path("/c"),
                  "sft.")
    assert "Lower sft.optim.lr, enable sft.optim.clip_norm" in str(e)
    assert "rerun the same command with the new value to resume" in str(e)
    w = _GrowthWatch("preference.")
    with caplog.at_level(logging.WARNING):
        assert not w.check(1, {"loss": 0.7})
        assert not w.check(2, {"loss": 0.7 * 999})
        assert w.check(3, {"loss": 0.7 * 1001})
        assert not w.check(4, {"loss": 1e9})  # once
    assert "step 3" in caplog.text and "preference.optim.lr" in caplog.text
