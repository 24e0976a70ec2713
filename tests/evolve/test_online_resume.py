"""A `grpo` run killed with SIGKILL mid-way resumes at the step after its last checkpoint, draws
the same prompts with the same seeds, and ends with parameters bitwise equal to an uninterrupted
run's (TRL's async GRPO once resumed at the wrong prompt)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from jaxevo.evolve.driver import run_evolve
from jaxevo.evolve.scorers import SCORERS, register_scorer
from jaxevo.weights.safetensors_io import SafetensorsFile
from tests.conftest import subprocess_env
from tests.evolve.conftest import ROOT, recipe
from tests.evolve.test_online import ONLINE, parity

STEPS = 6
# Dynamic sampling with groups of 2 (half of them flat): the position also holds the draws the
# last steps needed; resumed without them, a step samples its draws in other calls (other seeds).
EXTRA = [*ONLINE, f"grpo.steps={STEPS}", "prompts.per_round=6", "grpo.beta=0.04", "grpo.iterations=2",
         "grpo.dynamic_sampling=true", "grpo.max_draws=3", "grpo.group_size=2", "grpo.micro_batch_size=2"]

# The killed run: a separate process (the same overrides), so the kill is a real SIGKILL.
CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from jaxevo.runtime import enable_compilation_cache
    enable_compilation_cache()
    from jaxevo.evolve.driver import run_evolve
    from jaxevo.evolve.scorers import register_scorer
    from tests.evolve.conftest import recipe
    from tests.evolve.test_online import parity
    register_scorer("test_parity")(parity)
    cfg, raw = recipe("grpo", {run!r}, {model!r}, *{extra!r})
    run_evolve(cfg, raw)
""")


@pytest.fixture(autouse=True, scope="module")
def registered():
    if "test_parity" not in SCORERS:
        register_scorer("test_parity")(parity)
    yield
    SCORERS.remove("test_parity")


def _params(run_dir):
    f = SafetensorsFile(run_dir / "final_model" / "model.safetensors")
    return {k: np.asarray(f.get(k)) for k in f.keys()}


@pytest.mark.heavy  # two GRPO runs, one SIGKILLed: minutes; `pytest -m heavy`
def test_sigkilled_grpo_run_resumes_bitwise(tmp_path, tiny_model):
    killed = tmp_path / "killed"
    code = CHILD.format(root=str(ROOT), run=str(killed), model=tiny_model, extra=EXTRA)
    env = subprocess_env()
    child = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    ckpts = killed / "round_001" / "grpo.partial" / "train" / "checkpoints"
    deadline = time.time() + 600
    try:
        while not (ckpts / "2").is_dir():  # Orbax renames a step's folder once it is complete
            assert child.poll() is None, child.stderr.read().decode()[-3000:]
            assert time.time() < deadline, "no checkpoint of step 2 within 10 minutes"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    saved = sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit())
    assert 2 <= saved[-1] < STEPS, saved  # killed mid-way, not after the last step

    cfg, raw = recipe("grpo", killed, tiny_model, *EXTRA)
    m = run_evolve(cfg, raw)  # resumes from the checkpoint
    assert m["rounds"]["1"]["stages"]["grpo"]["steps"] == STEPS
    rows = (killed / "round_001" / "grpo" / "train" / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(r)["step"] for r in rows]  # the killed process's, then the resumed one's
    restart = next(i for i in range(1, len(steps) + 1) if i == len(steps) or steps[i] <= steps[i - 1])
    assert steps[restart:] == list(range(saved[-1] + 1, STEPS + 1)) or (
        restart == len(steps) and steps == list(range(1, STEPS + 1)))  # resumed, never from step 1
    assert steps.count(1) == 1
    cfg, raw = recipe("grpo", tmp_path / "straight", tiny_model, *EXTRA)
    run_evolve(cfg, raw)

    pa, pb = _params(tmp_path / "straight"), _params(killed)
    assert pa.keys() == pb.keys()
    for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)
