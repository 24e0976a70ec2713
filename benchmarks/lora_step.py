"""DPO train step: full fine-tuning vs LoRA vs QLoRA; same model, data, batch and precision.

    python benchmarks/lora_step.py [--steps 3] [--pairs 4] [--length 256] [--rank 16]
                                   [--quantize nf4] [--out benchmarks/results/lora_step.json]

* Model: SmolLM2-135M-Instruct (the embedded default), fp32 master weights, fp32 compute.
* Data: ``--pairs`` pairs of random token ids, prompt 48 tokens, both views exactly ``--length``
  tokens; reference log-probs precomputed (jaxevo's default), so a step is one policy forward +
  backward of 2·pairs sequences + AdamW (over all weights, or over the adapters only).
* Each mode runs in its own subprocess: s/step is the best of ``--steps`` steps after one warm-up
  (compilation), the median too; peak RSS is the subprocess's ``ru_maxrss``; the compiler's
  figures (``memory_analysis``: arguments, temps) of the jitted step are reported beside them.
* LoRA applies ``x·W + scale·(x·A)·B`` inside the layers for all 7 projections
  (`jaxevo.models.lowrank`); QLoRA the same on a base stored ``--quantize`` (int8 / nf4,
  `jaxevo.lora.quantize`), dequantised per layer to the compute dtype. Peak RSS includes loading
  the fp32 model before it is quantised (the loader has no quantised path).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

from _worker import run_worker

MODEL = "smollm2-135m-instruct"


def worker(args) -> dict:
    import jax
    import numpy as np

    from jaxevo.lora import init_adapters
    from jaxevo.sharding import make_mesh
    from jaxevo.train.batches import TokenizedData
    from jaxevo.train.builder import build_step
    from jaxevo.train.config import ObjectiveSection, OptimSection, TrainConfig
    from jaxevo.lora import LoraSection
    from jaxevo.train.state import init_state
    from jaxevo.train.step import finalize_metrics
    from jaxevo.weights.load import load_pretrained

    mesh = make_mesh((1, -1, 1))
    pre = load_pretrained(MODEL, dtype="float32", param_dtype="float32", remat=args.remat, mesh=mesh)
    cfg = pre.cfg
    rng = np.random.RandomState(0)
    n, t, p = args.pairs, args.length, 48
    arrays = {}
    for view in ("chosen", "rejected"):
        seq = rng.randint(10, cfg.vocab_size, (n, t)).astype(np.int32)
        lab = np.full((n, t), -1, np.int32)
        lab[:, p - 1: t - 1] = seq[:, p:]
        arrays.update({f"{view}/tokens": seq, f"{view}/labels": lab,
                       f"{view}/segments": np.ones((n, t), np.int32),
                       f"{view}/positions": np.tile(np.arange(t, dtype=np.int32), (n, 1))})
    arrays |= {"ref/chosen": np.full((n,), -2000.0, np.float32),
               "ref/rejected": np.full((n,), -2000.0, np.float32)}
    data = TokenizedData(arrays=arrays, views=("chosen", "rejected"), stats={})
    quant = args.quantize if args.worker == "qlora" else None
    lora = (LoraSection(rank=args.rank, alpha=2.0 * args.rank, quantize_base=quant)
            if args.worker in ("lora", "qlora") else LoraSection())
    tcfg = TrainConfig(batch_size=n, logprob_chunk=args.chunk, lora=lora,
                       objective=ObjectiveSection(name="preference", loss_type="sigmoid", beta=0.1),
                       optim=OptimSection(lr=1e-6, schedule="constant", clip_norm=1.0))
    ap = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), pre.params)
    parts = build_step(tcfg, cfg, mesh, ap, 100)  # the step `jaxevo train` builds
    base = pre.params
    if quant:
        from jaxevo.lora.quantize import frozen_base_shardings, quantize_base
        from jaxevo.sharding import param_shardings
        base = quantize_base(base, quant, cfg, frozen_base_shardings(
            lora, cfg, mesh, param_shardings(cfg, mesh)))
        base_bytes = sum(x.nbytes for x in jax.tree.leaves(base))
    else:
        base_bytes = sum(x.nbytes for x in jax.tree.leaves(base))
    if lora.enabled:
        state = init_state(init_adapters(lora, cfg, jax.random.key(0), parts.state_shardings.params),
                           parts.tx, 0, parts.state_shardings)
        step = lambda s, b: parts.step(s, b, None, base)  # noqa: E731
    else:
        state = init_state(base, parts.tx, 0, parts.state_shardings)
        step = parts.step
    del pre
    batch = data.take(np.arange(n), 1)
    lowered = parts.step.jitted.lower(state, batch, None, base if lora.enabled else None, None)
    mem = lowered.compile().memory_analysis()
    compiled = {k: getattr(mem, k + "_size_in_bytes", 0) / 2**20 for k in
                ("argument", "output", "temp", "alias")}
    times, losses = [], []
    if args.compile_only:  # the compiler's figures only (independent of the machine's load)
        return {"compiled_mb": compiled, "base_mb": base_bytes / 2**20,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    for _ in range(args.steps + 1):
        t0 = time.perf_counter()
        state, m = step(state, batch)
        m = finalize_metrics(jax.device_get(m))
        times.append(time.perf_counter() - t0)
        losses.append(m["loss"])
    steady = sorted(times[1:])
    trainable = sum(x.size for x in jax.tree.leaves(state.params))
    return {"s_per_step": steady[0], "median_s_per_step": steady[len(steady) // 2],
            "step_times": times, "losses": losses, "trainable_params": int(trainable),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            "compiled_mb": compiled, "base_mb": base_bytes / 2**20}


def _run(mode: str, common: list[str]) -> dict:
    return run_worker(__file__, mode, common)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--remat", default="dots_no_batch")
    ap.add_argument("--quantize", default="nf4", choices=("int8", "nf4"))
    ap.add_argument("--compile-only", action="store_true",
                    help="only compile each step and report the compiler's memory figures")
    ap.add_argument("--out", default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        load0 = os.getloadavg()
        res = worker(args)
        res["load_avg"] = {"start": load0, "end": os.getloadavg()}
        Path(args.worker_out).write_text(json.dumps(res))
        return
    common = ["--steps", str(args.steps), "--pairs", str(args.pairs), "--length", str(args.length),
              "--rank", str(args.rank), "--chunk", str(args.chunk), "--remat", args.remat,
              "--quantize", args.quantize] + (["--compile-only"] if args.compile_only else [])
    report = {"config": vars(args) | {"worker": None, "worker_out": None}}
    for mode in ("full", "lora", "qlora"):
        report[mode] = _run(mode, common)
    f, lo, q = report["full"], report["lora"], report["qlora"]
    if args.compile_only:
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(report, indent=2))
        print(json.dumps(report, indent=2))
        for name, r in (("full", f), (f"LoRA r={args.rank}", lo), (f"QLoRA {args.quantize}", q)):
            c = r["compiled_mb"]
            print(f"  {name:12s} arguments {c['argument']:6.0f} MB  temp {c['temp']:6.0f} MB  "
                  f"base {r['base_mb']:5.0f} MB")
        return
    report["lora_speedup"] = f["s_per_step"] / lo["s_per_step"]
    report["lora_rss_ratio"] = lo["peak_rss_mb"] / f["peak_rss_mb"]
    report["qlora_speedup"] = f["s_per_step"] / q["s_per_step"]
    report["qlora_rss_ratio"] = q["peak_rss_mb"] / f["peak_rss_mb"]
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(text)
    print(f"\nDPO step, {args.pairs} pairs x {args.length} tokens, fp32 compute:")
    for name, r in (("full", f), (f"LoRA r={args.rank}", lo), (f"QLoRA {args.quantize}", q)):
        print(f"  {name:12s} {r['s_per_step']:7.2f} s/step  peak RSS {r['peak_rss_mb']:6.0f} MB  "
              f"temp {r['compiled_mb']['temp']:6.0f} MB  base {r['base_mb']:5.0f} MB")


if __name__ == "__main__":
    main()
