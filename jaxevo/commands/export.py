"""`jaxevo export --model M --out DIR`: a Hugging Face directory transformers loads with the same
logits (a reward model: its `*ForSequenceClassification`, with the same scores); ``--peft``: the
LoRA adapter of a run trained with ``lora.rank > 0`` in PEFT's format."""

from __future__ import annotations

import shutil
from pathlib import Path


def add_arguments(p):
    p.add_argument("--model", required=True, help="HF directory, .gguf file, jaxevo checkpoint, "
                   "a `jaxevo train` out_dir (its final/ model), or embedded name")
    p.add_argument("--out", required=True, help="output directory (created)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="dtype of the written tensors")
    p.add_argument("--peft", action="store_true", help="write the LoRA adapter (adapter_config.json "
                   "+ adapter_model.safetensors, PEFT's names) instead of the merged model")


def _resolve(model: str) -> str:
    """A train out_dir stands for its exported final/ model."""
    final = Path(model) / "final"
    return str(final) if (final / "jaxevo.json").is_file() else model


def run(args) -> int:
    # Here, not at the top: they import jax and transformers, and `jaxevo export --help` needs
    # neither (docs/benchmarks.md, CLI start-up).
    from jaxevo.errors import ConfigError
    from jaxevo.outputs import check_writable
    from jaxevo.weights.hf import export_hf
    from jaxevo.weights.load import load_pretrained
    from jaxevo.weights.reward_hf import export_reward_hf, is_reward_checkpoint, load_reward

    check_writable(args.out, is_dir=True)  # before the (possibly long) load
    model = _resolve(args.model)
    if args.peft:
        adapter = Path(model) / "adapter"
        if not (adapter / "adapter_config.json").is_file():
            raise ConfigError(f"--peft: {args.model} has no LoRA adapter ({adapter} is missing); "
                              "only a run trained with lora.rank > 0 has one — drop --peft to "
                              "export the model")
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for f in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copyfile(adapter / f, out / f)
        print(f"exported the LoRA adapter of {args.model} to {out}")
        return 0
    if is_reward_checkpoint(model):  # a reward model (e.g. `jaxevo train` objective reward_model)
        cfg, params, tok, pad = load_reward(model, dtype="float32")
        out = export_reward_hf(params, cfg, args.out, tok, pad_token_id=pad, dtype=args.dtype)
        print(f"exported the reward model {args.model} ({cfg.num_params() / 1e6:.1f}M params) to {out}")
        return 0
    m = load_pretrained(model)
    out = export_hf(m.params, m.cfg, args.out, tokenizer=m.tokenizer, dtype=args.dtype)
    print(f"exported {args.model} ({m.cfg.num_params() / 1e6:.1f}M params) to {out}")
    return 0
