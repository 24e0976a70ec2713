#!/usr/bin/env bash
# Copy a run directory back from worker 0 (process 0 writes reports/JSONL there). With the run
# directory on a GCS bucket (out_dir=gs://...), use `gsutil -m rsync` instead.
#   tpu_scripts/copy_results.sh --name my-tpu --zone us-east5-a --remote runs/x --local ./runs/ [--dry-run]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_common "$@"
REMOTE=""; LOCAL="./"
set -- "${REST[@]+"${REST[@]}"}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --remote) REMOTE="$2"; shift 2 ;;
    --local) LOCAL="$2"; shift 2 ;;
    *) die "copy_results.sh: unknown argument '$1'" ;;
  esac
done
[[ -n "$REMOTE" ]] || die "copy_results.sh: --remote DIR (on the workers, relative to ~) is required"
pf="$(project_flag)"
run gcloud compute tpus tpu-vm scp --recurse "$TPU_NAME:~/$REMOTE" "$LOCAL" --zone="$TPU_ZONE" \
  ${pf:+"$pf"} --worker=0
