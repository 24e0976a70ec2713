#!/usr/bin/env bash
# The test command of the README: installs what it needs, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
python -m pytest -q --durations=15 "$@"
