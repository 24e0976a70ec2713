"""tpu_scripts/: shellcheck clean, and every script's --dry-run prints the right gcloud commands."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests._require import require_executable

SCRIPTS = Path(__file__).parents[2] / "tpu_scripts"
NAMES = ["create.sh", "setup.sh", "launch.sh", "logs.sh", "copy_results.sh", "teardown.sh"]


def dry(script: str, *args: str, **env) -> list[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("TPU_")}
    e.update(env)
    p = subprocess.run(["bash", str(SCRIPTS / script), "--dry-run", *args], env=e,
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip().splitlines()


def test_shellcheck_clean():
    shellcheck = require_executable("shellcheck")  # skipped without it, failed in CI
    p = subprocess.run([shellcheck, "-x", *NAMES, "common.sh"], cwd=SCRIPTS,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr


def test_all_scripts_exist_strict_and_executable():
    for n in NAMES:
        text = (SCRIPTS / n).read_text()
        assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text, n
        assert os.access(SCRIPTS / n, os.X_OK), n


def test_create_dry_run_flags_and_env():
    (line,) = dry("create.sh", "--name", "evo", "--project", "proj", "--zone", "us-east5-a",
                  "--type", "v5e-64", "--spot")
    assert line == ("gcloud compute tpus queued-resources create evo --node-id=evo "
                    "--zone=us-east5-a --project=proj --accelerator-type=v5litepod-64 "
                    "--runtime-version=v2-alpha-tpuv5-lite --spot")
    (line,) = dry("create.sh", TPU_NAME="a", TPU_ZONE="europe-west4-b", TPU_TYPE="v5p-32",
                  TPU_VERSION="custom-rt")
    assert "--accelerator-type=v5p-32 --runtime-version=custom-rt" in line
    assert "--spot" not in line and "--project" not in line and line.split()[5] == "a"


def test_setup_launch_logs_copy_teardown_dry_runs():
    (setup,) = dry("setup.sh", "--name", "evo", "--zone", "z")
    assert setup.startswith("gcloud compute tpus tpu-vm ssh evo --zone=z --worker=all '--command=")
    assert 'pip install "jaxevo[tpu]"' in setup
    launch = dry("launch.sh", "--name", "evo", "--zone", "z", "--run", "r1", "--retry", "2", "--",
                 "jaxevo", "evolve", "--config", "configs/scale/x.yaml", "rounds=2")
    assert len(launch) == 1 and "--worker=all" in launch[0]
    assert "jaxevo evolve --config configs/scale/x.yaml rounds=2 > ~/jaxevo-logs/r1.log 2>&1" in launch[0]
    (logs,) = dry("logs.sh", "--name", "evo", "--zone", "z", "--run", "r1", "--follow")
    assert logs.endswith("--worker=0 '--command=tail -n 200 -F ~/jaxevo-logs/r1.log'")
    (cp,) = dry("copy_results.sh", "--name", "evo", "--zone", "z", "--remote", "runs/a", "--local", "out/")
    assert cp == "gcloud compute tpus tpu-vm scp --recurse 'evo:~/runs/a' out/ --zone=z --worker=0"
    (td,) = dry("teardown.sh", "--name", "evo", "--zone", "z")
    assert td == "gcloud compute tpus queued-resources delete evo --zone=z --force --quiet"


def test_bad_arguments_fail_clearly():
    p = subprocess.run(["bash", str(SCRIPTS / "launch.sh"), "--dry-run"], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 2 and "no command" in p.stderr
    p = subprocess.run(["bash", str(SCRIPTS / "create.sh"), "--dry-run", "--type", "x9-1"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "unknown accelerator type" in p.stderr
