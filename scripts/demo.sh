#!/usr/bin/env bash
# The README's main command: installs what it needs, then runs the embedded demo
# (3 rounds of verifier-driven self-evolution of SmolLM2-135M-Instruct on a CPU).
# Extra arguments are config overrides, e.g. `bash scripts/demo.sh run.rounds=1`.
set -euo pipefail
cd "$(dirname "$0")/.."
# The demo runs no torch, trl or peft: install jaxevo without its test extra.
JAXEVO_EXTRAS= bash scripts/setup.sh
. .venv/bin/activate
jaxevo evolve --config configs/demo.yaml "$@"
