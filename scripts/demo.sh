#!/usr/bin/env bash
# The README's main command: installs what it needs, then runs the embedded demo: 3 rounds of
# online GRPO of SmolLM2-135M-Instruct on arithmetic word problems, rewarded by the verifier
# (configs/grpo.yaml, into runs/demo), then its format-only control (the same recipe rewarded for
# the answer format alone, into runs/demo_control), then `jaxevo compare` of the two.
# The control runs DEMO_CONTROL_ROUNDS rounds (default 1): formatting's gain comes in its first
# round, and in two of three seeds the control then lost accuracy (docs/results.md), so one round
# is the stronger control at a third of the cost; DEMO_CONTROL_ROUNDS=3 gives the same-budget one.
# Extra arguments are config overrides for both arms, e.g. `bash scripts/demo.sh run.seed=1`;
# `run.dir=D` puts the control in D_control.
set -euo pipefail
cd "$(dirname "$0")/.."
# The demo runs no torch, trl or peft: install jaxevo without its test extra.
JAXEVO_EXTRAS='' bash scripts/setup.sh
. .venv/bin/activate
dir=runs/demo
for arg in "$@"; do
  case "$arg" in run.dir=*) dir=${arg#run.dir=} ;; esac
done
jaxevo evolve --config configs/grpo.yaml run.dir="$dir" "$@"
# The start model's evaluation is the recipe arm's round 0: the control does not repeat it.
jaxevo evolve --config configs/grpo.yaml "$@" run.dir="${dir}_control" \
  "grpo.rewards={format_only: 1.0}" eval.before=false run.rounds="${DEMO_CONTROL_ROUNDS:-1}"
jaxevo compare "$dir" "${dir}_control"
