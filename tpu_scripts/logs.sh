#!/usr/bin/env bash
# Show or stream a run's log from one worker (process 0 logs progress; others only errors).
#   tpu_scripts/logs.sh --name my-tpu --zone us-east5-a --run NAME [--worker 0] [--follow] [--dry-run]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_common "$@"
RUN=""; WORKER=0; FOLLOW=0
set -- "${REST[@]+"${REST[@]}"}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --run) RUN="$2"; shift 2 ;;
    --worker) WORKER="$2"; shift 2 ;;
    --follow|-f) FOLLOW=1; shift ;;
    *) die "logs.sh: unknown argument '$1'" ;;
  esac
done
[[ -n "$RUN" ]] || die "logs.sh: --run NAME is required (the name launch.sh printed/used)"
if [[ "$FOLLOW" == 1 ]]; then view="tail -n 200 -F"; else view="tail -n 200"; fi
pf="$(project_flag)"
run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$TPU_ZONE" ${pf:+"$pf"} --worker="$WORKER" \
  --command="$view ~/jaxevo-logs/${RUN}.log"
