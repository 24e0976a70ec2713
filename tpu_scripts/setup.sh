#!/usr/bin/env bash
# Install jaxevo (with the TPU extra: jax[tpu] + libtpu) on every worker.
#   tpu_scripts/setup.sh --name my-tpu --zone us-east5-a [--source git+https://...|/path/to/wheel] [--dry-run]
# Default source: JAXEVO_SOURCE, else the PyPI package `jaxevo`. A local checkout is copied with
# `--source .` (scp to every worker, then an editable install).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_common "$@"
SOURCE="${JAXEVO_SOURCE:-jaxevo}"
set -- "${REST[@]+"${REST[@]}"}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --source) SOURCE="$2"; shift 2 ;;
    *) die "setup.sh: unknown argument '$1'" ;;
  esac
done
pf="$(project_flag)"
if [[ -f "$SOURCE/pyproject.toml" ]]; then  # a checkout (not the PyPI name)
  run gcloud compute tpus tpu-vm scp --recurse "$SOURCE" "$TPU_NAME:~/jaxevo" --zone="$TPU_ZONE" \
    ${pf:+"$pf"} --worker=all
  # shellcheck disable=SC2016  # $HOME expands on the worker, not here
  spec='-e "$HOME/jaxevo[tpu]"'
else
  spec="\"${SOURCE}[tpu]\""
fi
ssh_all "set -e; python3 -m venv ~/venv && . ~/venv/bin/activate && pip install -U pip && pip install $spec && python -c 'import jax; print(jax.process_index(), jax.device_count())'"
