#!/usr/bin/env bash
# Create a Cloud TPU slice through a queued resource (waits in line for capacity).
#   tpu_scripts/create.sh --name my-tpu --zone us-east5-a --type v5p-32 [--spot] [--dry-run]
# --spot: spot capacity (cheaper; can be preempted: runs get SIGTERM, jaxevo checkpoints and stops,
#         launch.sh --retry reruns and resumes). --reserved: use the project's reservation.
# --wait: poll until the queued resource is ACTIVE.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_common "$@"
SPOT=0; RESERVED=0; WAIT=0
for a in "${REST[@]+"${REST[@]}"}"; do
  case "$a" in
    --spot) SPOT=1 ;;
    --reserved) RESERVED=1 ;;
    --wait) WAIT=1 ;;
    *) die "create.sh: unknown argument '$a'" ;;
  esac
done
pf="$(project_flag)"
extra=()
if [[ "$SPOT" == 1 ]]; then extra+=(--spot); fi
if [[ "$RESERVED" == 1 ]]; then extra+=(--reserved); fi
run gcloud compute tpus queued-resources create "$TPU_NAME" --node-id="$TPU_NAME" \
  --zone="$TPU_ZONE" ${pf:+"$pf"} --accelerator-type="$TPU_TYPE" \
  --runtime-version="$TPU_VERSION" "${extra[@]+"${extra[@]}"}"
if [[ "$WAIT" == 1 ]]; then
  if [[ "$DRY_RUN" == 1 ]]; then
    run gcloud compute tpus queued-resources describe "$TPU_NAME" --zone="$TPU_ZONE" \
      ${pf:+"$pf"} --format='value(state.state)'
  else
    until [[ "$(gcloud compute tpus queued-resources describe "$TPU_NAME" --zone="$TPU_ZONE" \
      ${pf:+"$pf"} --format='value(state.state)')" == ACTIVE ]]; do
      echo "waiting for $TPU_NAME ..."; sleep 30
    done
  fi
fi
