"""`jaxevo export --model M --out DIR`: a Hugging Face directory transformers loads with the same logits."""

from __future__ import annotations


def add_arguments(p):
    p.add_argument("--model", required=True, help="HF directory, .gguf file, jaxevo checkpoint, or embedded name")
    p.add_argument("--out", required=True, help="output directory (created)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="dtype of the written tensors")


def run(args) -> int:
    # Here, not at the top: they import jax and transformers, and `jaxevo export --help` needs
    # neither (docs/benchmarks.md, CLI start-up).
    from jaxevo.outputs import check_writable
    from jaxevo.weights.hf import export_hf
    from jaxevo.weights.load import load_pretrained

    check_writable(args.out, is_dir=True)  # before the (possibly long) load
    m = load_pretrained(args.model)
    out = export_hf(m.params, m.cfg, args.out, tokenizer=m.tokenizer, dtype=args.dtype)
    print(f"exported {args.model} ({m.cfg.num_params() / 1e6:.1f}M params) to {out}")
    return 0
