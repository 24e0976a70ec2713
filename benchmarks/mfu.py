"""MFU of jaxevo's train step on a randomly initialised model of a given architecture.

    python benchmarks/mfu.py --preset llama-1b --batch 8 --length 1024 [--objective sft|dpo]
                             [--steps 5] [--peak-tflops 989] [--out benchmarks/results/mfu.json]
    python benchmarks/mfu.py --preset tiny --batch 2 --length 32      # seconds, on a CPU

* Model: a ``--preset`` architecture (family-size: ``llama-1b`` is Llama-3.2-1B's, hidden 2048,
  16 layers, 32 heads, 8 KV heads, intermediate 8192, vocab 128256, tied embeddings), built with
  `ModelConfig.from_hf` and randomly initialised (no download: the time does not depend on the
  values). ``--layers`` / ``--hidden`` / ``--intermediate`` override the preset.
* Step: the one `jaxevo train` builds (`build_step`), fp32 master weights and AdamW, compute in
  ``--dtype`` (bf16 by default, the stochastically rounded compute copy). ``sft``: ``--batch``
  rows of ``--length`` random tokens (the last 3/4 are the response); ``dpo``: ``--batch`` pairs
  (2·batch rows), reference log-probs precomputed, so a step is one forward + backward + AdamW.
* s/step: best and median of ``--steps`` steps after one compile step. FLOPs per step: 6 · matmul
  params · tokens + attention (`_flops.train_flops`, the formula train_step.py uses).
* MFU = FLOPs per step / s per step / peak. Peak: ``--peak-tflops``, else the device's bf16 dense
  spec (H100/H200 989 TFLOP/s, A100 312), else the best bf16 dot measured here on train-step-shaped
  matmuls (the JSON says which: ``peak_source``).
* Peak memory: the device's ``peak_bytes_in_use`` where it reports one (GPU, TPU), else the peak
  RSS of this process (CPU).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

from _flops import matmul_peak_jax, train_flops

LLAMA = dict(model_type="llama", architectures=["LlamaForCausalLM"], rms_norm_eps=1e-5,
             rope_theta=500000.0, max_position_embeddings=131072,
             rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                           "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
# HF config.json fields of each preset (the published architectures; weights are random).
PRESETS = {
    "tiny": dict(LLAMA, vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
    "smollm2-135m": dict(LLAMA, vocab_size=49152, hidden_size=576, intermediate_size=1536,
                         num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         rope_theta=100000.0, rope_scaling=None, max_position_embeddings=8192,
                         tie_word_embeddings=True),
    "llama-1b": dict(LLAMA, vocab_size=128256, hidden_size=2048, intermediate_size=8192,
                     num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                     head_dim=64, tie_word_embeddings=True),
    "llama-3b": dict(LLAMA, vocab_size=128256, hidden_size=3072, intermediate_size=8192,
                     num_hidden_layers=28, num_attention_heads=24, num_key_value_heads=8,
                     head_dim=128, tie_word_embeddings=True),
}
# Dense bf16 tensor-core peaks of the SXM parts (vendor datasheets), by a substring of device_kind.
SPEC_TFLOPS = (("H200", 989.0), ("H100", 989.0), ("A100", 312.0))


def spec_peak_tflops(device_kind: str) -> float | None:
    """The bf16 dense spec peak for a device kind such as 'NVIDIA H200', or None if unknown."""
    for key, tflops in SPEC_TFLOPS:
        if key.lower() in device_kind.lower():
            return tflops
    return None


def model_config(args):
    from jaxevo.models.config import ModelConfig

    hf = dict(PRESETS[args.preset])
    for flag, key in (("layers", "num_hidden_layers"), ("hidden", "hidden_size"),
                      ("intermediate", "intermediate_size")):
        if getattr(args, flag):
            hf[key] = getattr(args, flag)
    if args.hidden and "head_dim" in hf:  # keep heads x head_dim = hidden
        hf["head_dim"] = args.hidden // hf["num_attention_heads"]
    return ModelConfig.from_hf(hf, dtype=args.dtype, param_dtype="float32", remat=args.remat)


def random_data(cfg, objective: str, rows: int, length: int):
    """Random token ids as the objective's views: [rows, length] int32 arrays per view."""
    import numpy as np

    from jaxevo.train.batches import TokenizedData

    rng = np.random.RandomState(0)
    prompt = length // 4
    views = ("response",) if objective == "sft" else ("chosen", "rejected")
    arrays = {}
    for view in views:
        seq = rng.randint(0, cfg.vocab_size, (rows, length)).astype(np.int32)
        lab = np.full((rows, length), -1, np.int32)
        lab[:, prompt - 1: length - 1] = seq[:, prompt:]
        arrays |= {f"{view}/tokens": seq, f"{view}/labels": lab,
                   f"{view}/segments": np.ones((rows, length), np.int32),
                   f"{view}/positions": np.tile(np.arange(length, dtype=np.int32), (rows, 1))}
    if objective == "dpo":  # precomputed reference log-probs (jaxevo's default)
        arrays |= {f"ref/{v}": np.full((rows,), -2000.0, np.float32) for v in views}
    return TokenizedData(arrays=arrays, views=views, stats={})


def peak_memory() -> tuple[float, str]:
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2**20, "device peak_bytes_in_use"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "process peak RSS"


def run(args) -> dict:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxevo.models.transformer import Transformer
    from jaxevo.sharding import make_mesh, param_shardings
    from jaxevo.train.builder import build_step
    from jaxevo.train.config import ModelSection, ObjectiveSection, OptimSection, TrainConfig
    from jaxevo.train.state import init_state
    from jaxevo.train.step import finalize_metrics

    cfg = model_config(args)
    mesh = make_mesh((1, -1, 1))
    tok = jnp.zeros((1, 1), jnp.int32)
    init = lambda k: nn.meta.unbox(Transformer(cfg).init(k, tok, tok, jnp.ones((1, 1, 1), bool))["params"])  # noqa: E731
    params = jax.jit(init, out_shardings=param_shardings(cfg, mesh))(jax.random.key(0))
    objective = (ObjectiveSection(name="sft") if args.objective == "sft" else
                 ObjectiveSection(name="preference", loss_type="sigmoid", beta=0.1))
    tcfg = TrainConfig(batch_size=args.batch, logprob_chunk=args.chunk, objective=objective,
                       model=ModelSection(dtype=args.dtype, rounding=args.rounding, remat=args.remat),
                       optim=OptimSection(lr=1e-5, schedule="constant", clip_norm=1.0))
    ap = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    parts = build_step(tcfg, cfg, mesh, ap, 100)  # the step `jaxevo train` builds
    state = init_state(params, parts.tx, 0, parts.state_shardings)
    del params
    rows = args.batch * (1 if args.objective == "sft" else 2)
    batch = random_data(cfg, args.objective, args.batch, args.length).take(np.arange(args.batch), 1)
    times, losses = [], []
    for _ in range(args.steps + 1):
        t0 = time.perf_counter()
        state, m = parts.step(state, batch)
        m = finalize_metrics(jax.device_get(m))  # waits for the step
        times.append(time.perf_counter() - t0)
        losses.append(m["loss"])
    steady = sorted(times[1:])
    flops = train_flops(cfg, rows, args.length)
    dev = jax.devices()[0]
    kind = getattr(dev, "device_kind", dev.platform)
    if args.peak_tflops:
        peak, source = args.peak_tflops * 1e12, "given (--peak-tflops)"
    elif spec_peak_tflops(kind):
        peak, source = spec_peak_tflops(kind) * 1e12, f"bf16 dense spec of {kind}"
    else:
        tokens, e, f = rows * args.length, cfg.hidden_size, cfg.intermediate_size
        shapes = [(tokens, e, f), (tokens, f, e), (tokens, e, e), (min(tokens, 4096), e, cfg.vocab_size)]
        measured = matmul_peak_jax("bfloat16", shapes, args.peak_seconds)
        peak, source = max(measured.values()), f"measured: best bf16 dot of {sorted(measured)}"
    mem_mb, mem_source = peak_memory()
    s = steady[0]
    return {"preset": args.preset, "objective": args.objective, "batch": args.batch, "rows": rows,
            "length": args.length, "dtype": args.dtype, "rounding": args.rounding, "remat": args.remat,
            "params": cfg.num_params(), "layers": cfg.num_layers, "hidden": cfg.hidden_size,
            "intermediate": cfg.intermediate_size, "heads": cfg.num_heads, "kv_heads": cfg.num_kv_heads,
            "head_dim": cfg.head_dim, "vocab": cfg.vocab_size, "tied": cfg.tie_word_embeddings,
            "s_per_step": s, "median_s_per_step": steady[len(steady) // 2], "step_times": times,
            "compile_plus_first_s": times[0], "losses": losses,
            "tokens_per_s": rows * args.length / s, "flops_per_step": flops,
            "achieved_tflops": flops / s / 1e12, "peak_tflops": peak / 1e12, "peak_source": source,
            "mfu": flops / s / peak, "peak_memory_mb": mem_mb, "peak_memory_source": mem_source,
            "device": str(dev), "device_kind": kind, "jax": jax.__version__}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="llama-1b", choices=sorted(PRESETS))
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--hidden", type=int, default=None)
    ap.add_argument("--intermediate", type=int, default=None)
    ap.add_argument("--objective", default="sft", choices=["sft", "dpo"])
    ap.add_argument("--batch", type=int, default=8, help="rows (sft) or pairs (dpo) per step")
    ap.add_argument("--length", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=5, help="timed steps after the compile step")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--rounding", default="stochastic", choices=["stochastic", "nearest"])
    ap.add_argument("--remat", default="none", choices=["none", "full", "dots", "dots_no_batch"])
    ap.add_argument("--chunk", type=int, default=128, help="log-prob sequence chunk")
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--peak-seconds", type=float, default=1.5,
                    help="time per shape of the measured matmul peak (unknown devices only)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    r = run(args)
    text = json.dumps(r, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(text)
    print(f"\n{args.preset} ({r['params'] / 1e6:.1f}M params) {args.objective}, {r['rows']} x "
          f"{args.length} tokens, {args.dtype}: {r['s_per_step']:.3f} s/step (median "
          f"{r['median_s_per_step']:.3f}), {r['tokens_per_s']:.0f} tok/s, "
          f"{r['achieved_tflops']:.3g} TFLOP/s = MFU {r['mfu']:.1%} of {r['peak_tflops']:.3g} "
          f"({r['peak_source']}); peak memory {r['peak_memory_mb']:.0f} MB")


if __name__ == "__main__":
    main()
