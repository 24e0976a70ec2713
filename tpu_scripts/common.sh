#!/usr/bin/env bash
# Shared by every tpu_scripts/*.sh: settings from flags or environment, and `run` (prints the
# command under --dry-run instead of executing it). Source it; do not run it.
#
# Settings (flag | environment variable | default):
#   --name       TPU_NAME        jaxevo-tpu       TPU VM / queued-resource name
#   --project    TPU_PROJECT     (gcloud's)       GCP project
#   --zone       TPU_ZONE        us-east5-a       zone that has the accelerator
#   --type       TPU_TYPE        v5p-32           accelerator type (v5p-32, v5litepod-64, v6e-8, ...)
#   --version    TPU_VERSION     (per type)       TPU VM runtime (v2-alpha-tpuv5, v2-alpha-tpuv5-lite, ...)
#   --dry-run    DRY_RUN=1                        print the gcloud commands, run nothing

TPU_NAME="${TPU_NAME:-jaxevo-tpu}"
TPU_PROJECT="${TPU_PROJECT:-}"
TPU_ZONE="${TPU_ZONE:-us-east5-a}"
TPU_TYPE="${TPU_TYPE:-v5p-32}"
TPU_VERSION="${TPU_VERSION:-}"
DRY_RUN="${DRY_RUN:-0}"
REST=()

parse_common() {
  # Consumes the common flags; anything else is left in REST for the script.
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --name) TPU_NAME="$2"; shift 2 ;;
      --project) TPU_PROJECT="$2"; shift 2 ;;
      --zone) TPU_ZONE="$2"; shift 2 ;;
      --type) TPU_TYPE="$2"; shift 2 ;;
      --version) TPU_VERSION="$2"; shift 2 ;;
      --dry-run) DRY_RUN=1; shift ;;
      *) REST+=("$1"); shift ;;
    esac
  done
  if [[ -z "$TPU_VERSION" ]]; then
    case "$TPU_TYPE" in
      v5p-*) TPU_VERSION="v2-alpha-tpuv5" ;;
      v5litepod-*|v5e-*) TPU_VERSION="v2-alpha-tpuv5-lite" ;;
      v6e-*) TPU_VERSION="v2-alpha-tpuv6e" ;;
      v4-*) TPU_VERSION="tpu-ubuntu2204-base" ;;
      *) die "unknown accelerator type '$TPU_TYPE': pass --version" ;;
    esac
  fi
  # gcloud names v5e slices v5litepod-N.
  TPU_TYPE="${TPU_TYPE/v5e-/v5litepod-}"
}

die() { echo "error: $*" >&2; exit 2; }

project_flag() {
  if [[ -n "$TPU_PROJECT" ]]; then printf -- '--project=%s' "$TPU_PROJECT"; fi
}

run() {
  # Print (dry run) or execute a command; arguments are printed shell-quoted so they paste back.
  if [[ "$DRY_RUN" == 1 ]]; then
    local out="" a
    for a in "$@"; do
      if [[ "$a" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then out+="$a "; else out+="'${a//\'/\'\\\'\'}' "; fi
    done
    echo "${out% }"
  else
    "$@"
  fi
}

ssh_all() {
  # Run a shell command on every worker of the TPU VM at once.
  local cmd="$1"
  local pf
  pf="$(project_flag)"
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$TPU_ZONE" ${pf:+"$pf"} --worker=all \
    --command="$cmd"
}
