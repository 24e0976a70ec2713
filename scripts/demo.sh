#!/usr/bin/env bash
# The README's main command: installs what it needs, then runs the embedded demo: one round of 10
# online GRPO steps of SmolLM2-135M-Instruct on arithmetic word problems, rewarded by the verifier
# (configs/grpo_quick.yaml, into runs/demo), then its format-only control (the same recipe and
# budget rewarded for the answer format alone, into runs/demo_control), then `jaxevo compare` of
# the two. About 15 minutes on a 2-core CPU; configs/grpo.yaml is the 3-round recipe (40 minutes).
# Extra arguments are config overrides for both arms, e.g. `bash scripts/demo.sh run.seed=1`;
# `run.dir=D` puts the control in D_control. DEMO_CONFIG=configs/grpo.yaml runs the longer recipe.
set -euo pipefail
cd "$(dirname "$0")/.."
# The demo runs no torch, trl or peft: install jaxevo without its test extra, and compile only
# the modules it imports (scripts/setup.sh).
JAXEVO_EXTRAS='' JAXEVO_PIP_NO_COMPILE=1 bash scripts/setup.sh
. .venv/bin/activate
dir=runs/demo
for arg in "$@"; do
  case "$arg" in run.dir=*) dir=${arg#run.dir=} ;; esac
done
cfg=${DEMO_CONFIG:-configs/grpo_quick.yaml}
jaxevo evolve --config "$cfg" run.dir="$dir" "$@"
# The start model's evaluation is the recipe arm's round 0: the control does not repeat it.
jaxevo evolve --config "$cfg" "$@" run.dir="${dir}_control" "grpo.rewards={format_only: 1.0}" eval.before=false
jaxevo compare "$dir" "${dir}_control"
