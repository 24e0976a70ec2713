"""A check whose tool is missing skips on a developer's machine and fails when CI is set."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = ("from tests._require import require_module, require_executable\n"
         "def test_module():\n    require_module('no_such_module_jaxevo')\n"
         "def test_program():\n    require_executable('no-such-program-jaxevo')\n")


def _run(tmp_path, env_ci: str | None):
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    if env_ci is not None:
        env["CI"] = env_ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(tmp_path / "test_probe.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def test_missing_tool_skips_locally_and_fails_in_ci(tmp_path):
    local = _run(tmp_path, None)
    assert local.returncode == 0 and "2 skipped" in local.stdout, local.stdout[-2000:]
    ci = _run(tmp_path, "true")
    assert ci.returncode == 1 and "2 failed" in ci.stdout, ci.stdout[-2000:]
    assert "CI must run this check, not skip it" in ci.stdout
