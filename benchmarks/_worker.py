"""Run one arm of a benchmark in a fresh process (its own peak RSS, no shared jit caches)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path


def run_worker(script: str, mode: str, extra: list[str]) -> dict:
    """`python SCRIPT --worker MODE --worker-out FILE *extra`; returns the JSON it wrote to FILE."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        cmd = [sys.executable, script, "--worker", mode, "--worker-out", str(out), *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"{mode} worker failed (exit {proc.returncode}):\n{proc.stderr[-5000:]}")
        return json.loads(out.read_text())
