#!/usr/bin/env bash
# Run one command on all workers at once (jax.distributed finds its peers on a TPU VM by itself);
# each worker logs to ~/jaxevo-logs/<run>.log and the call returns when all have finished.
#   tpu_scripts/launch.sh --name my-tpu --zone us-east5-a [--run NAME] [--retry N] -- jaxevo evolve --config X.yaml
# --retry N: if the command exits 143 (SIGTERM: preempted, checkpoint written) or the ssh drops,
#            run it again (it resumes from the run directory), up to N times.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_common "$@"
RUN="jaxevo-$(date +%Y%m%d-%H%M%S)"; RETRY=0; CMD=()
set -- "${REST[@]+"${REST[@]}"}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --run) RUN="$2"; shift 2 ;;
    --retry) RETRY="$2"; shift 2 ;;
    --) shift; CMD=("$@"); break ;;
    *) die "launch.sh: unknown argument '$1' (put the command after --)" ;;
  esac
done
[[ ${#CMD[@]} -gt 0 ]] || die "launch.sh: no command (usage: launch.sh [opts] -- jaxevo ...)"
quoted="$(printf '%q ' "${CMD[@]}")"
remote="mkdir -p ~/jaxevo-logs && . ~/venv/bin/activate && cd ~ && ${quoted}> ~/jaxevo-logs/${RUN}.log 2>&1"
attempt=0
while true; do
  rc=0
  ssh_all "$remote" || rc=$?
  if [[ "$rc" == 0 || "$DRY_RUN" == 1 ]]; then exit 0; fi
  attempt=$((attempt + 1))
  if [[ "$attempt" -gt "$RETRY" ]]; then
    echo "launch.sh: failed with exit code $rc after $attempt attempt(s); see tpu_scripts/logs.sh --run $RUN" >&2
    exit "$rc"
  fi
  echo "launch.sh: exit code $rc (143 = preempted, checkpoint saved): rerun $attempt/$RETRY resumes" >&2
  sleep 30
done
