#!/usr/bin/env bash
# Delete the queued resource and its TPU VM (stops the billing). Asks unless --yes.
#   tpu_scripts/teardown.sh --name my-tpu --zone us-east5-a [--yes] [--dry-run]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_common "$@"
YES=0
for a in "${REST[@]+"${REST[@]}"}"; do
  case "$a" in
    --yes|-y) YES=1 ;;
    *) die "teardown.sh: unknown argument '$a'" ;;
  esac
done
if [[ "$YES" != 1 && "$DRY_RUN" != 1 ]]; then
  read -r -p "delete TPU $TPU_NAME in $TPU_ZONE? [y/N] " ok
  [[ "$ok" == y || "$ok" == Y ]] || exit 1
fi
pf="$(project_flag)"
run gcloud compute tpus queued-resources delete "$TPU_NAME" --zone="$TPU_ZONE" ${pf:+"$pf"} \
  --force --quiet
