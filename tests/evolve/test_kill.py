"""The real `jaxevo evolve` process, killed three times in one run (SIGKILL mid-sampling, SIGTERM
mid-SFT, SIGKILL between a stage's rename and its manifest entry) and rerun each time with the
same command, ends with a final model bitwise equal to an uninterrupted run's. A second `evolve`
started on the run directory while the first works is refused, naming the first."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jaxevo.weights.safetensors_io import SafetensorsFile
from tests.conftest import subprocess_env
from tests.evolve.conftest import SHRINK

ROOT = Path(__file__).resolve().parents[2]
# As tests/evolve/test_resume.py: every kind of stage, 1 round; f32 sampling and 3 journal chunks.
EXTRA = ["run.rounds=1", "eval.before=false", "sft.batch_size=2", "preference.batch_size=2",
         "sft.checkpoint.every=1", "select.pairs=rule", "select.min_margin=0.0",
         "model.sample_dtype=float32", "sample.journal_rows=4"]


def command(run_dir: Path, model: str) -> list[str]:
    return ["evolve", "--config", str(ROOT / "configs" / "evolve.yaml"), f"run.dir={run_dir}",
            f"model.path={model}", *SHRINK, *EXTRA]


def start(run_dir: Path, model: str, point: str, mark: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.evolve._kill_worker", str(mark), point, "--",
         *command(run_dir, model)], cwd=ROOT, env=subprocess_env(devices=1),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(mark: Path, p: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while not mark.exists():
        assert p.poll() is None, f"exited {p.returncode} before {mark.name}:\n" + p.communicate()[0][-4000:]
        assert time.time() < deadline, f"{mark.name} not reached"
        time.sleep(0.1)


def params(run_dir: Path) -> dict[str, np.ndarray]:
    f = SafetensorsFile(run_dir / "final_model" / "model.safetensors")
    return {k: np.asarray(f.get(k)) for k in f.keys()}


@pytest.mark.heavy  # ~4 min on the shared 2-core machine: five evolve processes; `pytest -m heavy`
def test_killed_three_ways_then_rerun_matches_and_a_second_writer_is_refused(tmp_path, tiny_model):
    straight = start(tmp_path / "straight", tiny_model, "none", tmp_path / "unused")
    run = tmp_path / "killed"

    p = start(run, tiny_model, "sampling", tmp_path / "m1")
    wait_for(tmp_path / "m1", p)
    journal = run / "round_001" / "generate.partial" / "samples_01.jsonl"
    assert len(journal.read_text().splitlines()) == 2  # header + the first chunk
    # A second writer while the first samples: refused, with the holder named; nothing touched.
    second = subprocess.run([sys.executable, "-m", "jaxevo.cli", *command(run, tiny_model)],
                            cwd=ROOT, env=subprocess_env(devices=1), capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 2, second.stderr[-3000:]
    assert f"in use by PID {p.pid} on host {socket.gethostname()} (jaxevo evolve" in second.stderr
    assert len(journal.read_text().splitlines()) == 2
    p.send_signal(signal.SIGKILL)
    p.wait()

    p = start(run, tiny_model, "sft", tmp_path / "m2")  # resumes sampling from the journal
    wait_for(tmp_path / "m2", p)
    p.send_signal(signal.SIGTERM)
    out = p.communicate(timeout=300)[0]
    assert p.returncode == 143, out[-4000:]
    assert f"resuming {run}: 1 stages finished (last: round 1 prompts), rounds done: none of 1; " \
           f"continuing in round_001/generate.partial" in out
    ckdir = run / "round_001" / "sft.partial" / "train" / "checkpoints"
    assert f"checkpoint of step 1 saved in {ckdir}; rerun the same command to resume" in out

    p = start(run, tiny_model, "rename", tmp_path / "m3")
    wait_for(tmp_path / "m3", p)
    p.send_signal(signal.SIGKILL)
    out = p.communicate()[0]
    assert "resuming from step 1 of" in out, out[-4000:]
    assert (run / "round_001" / "sft").is_dir() and not (run / "round_001" / "sft.partial").exists()

    p = start(run, tiny_model, "none", tmp_path / "m4")
    out = p.communicate(timeout=600)[0]
    assert p.returncode == 0, out[-4000:]
    out = straight.communicate(timeout=600)[0]
    assert straight.returncode == 0, out[-4000:]

    a, b = params(tmp_path / "straight"), params(run)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(b[k], a[k], err_msg=k)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["rounds"]["1"]["done"]
    rounds = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert rounds == [1]  # one row for the round, however often it was killed
