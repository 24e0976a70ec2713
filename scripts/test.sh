#!/usr/bin/env bash
# The test command of the README: installs what it needs, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
# Two worker processes (pytest-xdist), one module each at a time: on a 2-core machine one process
# leaves a core idle while it traces and compiles (23.5 against 28 minutes, docs/benchmarks.md).
# JAXEVO_TEST_WORKERS=0 runs in this process; a later `-n` on the command line wins.
python -m pytest -q --durations=15 -n "${JAXEVO_TEST_WORKERS:-2}" --dist loadscope "$@"
