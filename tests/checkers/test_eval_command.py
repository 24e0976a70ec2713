"""`jaxevo eval --checker`: bad input fails before any model loads, exit status 2, saying what to fix."""

from __future__ import annotations

import json
import subprocess
import sys


def _eval(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jaxevo.cli", "eval", "--model", "not-loaded", *args],
                          capture_output=True, text=True, timeout=300)


def test_unknown_checker_lists_the_valid_ones(tmp_path):
    data = tmp_path / "mc.jsonl"
    data.write_text(json.dumps({"prompt": "Pick", "choices": ["x", "y"], "answer": "A"}) + "\n")
    r = _eval("--data", str(data), "--checker", "multiple-choice")
    assert r.returncode == 2, r.stderr[-2000:]
    assert "unknown checker 'multiple-choice'; known: choice, code, constraints, exact, math" in r.stderr


def test_a_record_without_the_checkers_field_names_file_line_and_field(tmp_path):
    data = tmp_path / "mc.jsonl"
    data.write_text(json.dumps({"prompt": "Pick", "choices": ["x", "y"], "answer": "A"}) + "\n\n"
                    + json.dumps({"prompt": "Pick again", "answer": "B"}) + "\n")
    r = _eval("--data", str(data), "--checker", "choice")
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"{data} line 3: checker 'choice' needs the field 'choices'" in r.stderr
