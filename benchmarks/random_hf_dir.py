"""A Hugging Face model directory with a model's config and tokenizer and *random* weights.

    python benchmarks/random_hf_dir.py smollm2-135m-instruct .gpu_assets/smollm2-135m --no-weights
    python benchmarks/random_hf_dir.py .gpu_assets/smollm2-135m /tmp/smollm2-random

For throughput runs on a machine that cannot have the real weights (the lent GPU machine has no
network, and the embedded GGUF, 98 MB, is larger than what travels to it): the time of a step or of
`generate` with stop tokens off does not depend on the weights' values. SRC is an embedded name or
an HF dir; every file but the weights is copied. Without ``--no-weights`` transformers writes
seeded random weights (its own init, in float32) as ``model.safetensors``.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", help="embedded model name or HF dir")
    ap.add_argument("out")
    ap.add_argument("--no-weights", action="store_true", help="copy config and tokenizer only")
    args = ap.parse_args()
    src = Path(args.src)
    if not src.is_dir():
        from jaxevo.weights.load import hf_dir_for

        src = Path(hf_dir_for(args.src))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.suffix not in (".safetensors", ".bin") and not f.name.endswith(".index.json"):
            shutil.copy2(f, out / f.name)
    if not args.no_weights:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(out))
        model.save_pretrained(out)
    print(f"{out}: {sorted(p.name for p in out.iterdir())}")


if __name__ == "__main__":
    main()
