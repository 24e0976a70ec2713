"""DPO train step: jaxevo vs TRL's DPOTrainer, same model, data, batch and precision, one run.

    python benchmarks/train_step.py [--steps 3] [--pairs 4] [--length 256] [--dtype float32]
                                    [--rounding stochastic] [--also bfloat16:nearest float32]
                                    [--out benchmarks/results/train_step.json]

* Model: SmolLM2-135M-Instruct (the embedded default; TRL reads the same converted HF directory).
* Data: ``--pairs`` preference pairs whose prompt+chosen and prompt+rejected are exactly
  ``--length`` tokens (TRL tokenises the text and truncates to ``max_length``; jaxevo trains on
  the very token ids TRL produced, with the same prompt/completion split).
* Precision: fp32 weights on both sides. ``--dtype bfloat16`` is mixed precision on both: TRL's
  ``bf16=True`` (autocast: bf16 matmuls, fp32 master weights and AdamW) and jaxevo's bf16 compute
  copy of its fp32 master weights, rounded as ``--rounding`` says. ``--also`` times further
  jaxevo arms (``dtype[:rounding]``) on the same ids in the same run, for their loss curves and
  speed (e.g. the fp32 step against the bf16 one).
* Both sides precompute the reference log-probs before timing (TRL ``precompute_ref_log_probs``,
  jaxevo's default), so a step is one policy forward + backward of 2·pairs sequences + AdamW.
* Each framework runs in its own subprocess: s/step is the best (min) of ``--steps`` steps after
  one warm-up step (compilation for jaxevo), the median is reported too; on a shared machine the
  min is the least contended estimate of each. Peak RSS is the subprocess's ``ru_maxrss``.
* MFU = (6 · matmul params · tokens + attention FLOPs) / s_per_step / peak, where the peak is the
  best matmul FLOP/s of that framework measured here on train-step-shaped matmuls at the same
  precision (so the two MFUs have their own, measured denominators).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

from _flops import matmul_peak_jax, train_flops
from _worker import run_worker

# Each framework is imported inside its own worker function only: the workers run as separate
# subprocesses, so torch never loads into the jax process (or vice versa) and each peak RSS is
# that framework's own.

MODEL = "smollm2-135m-instruct"
WORDS = ("the model answers a question about numbers and then checks whether each step of its "
         "reasoning is correct before it writes the final result in a short sentence").split()


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _text(rng, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


# ----------------------------------------------------------------------------- matmul peaks


def matmul_peak_torch(dtype: str, shapes) -> dict:
    import torch

    dt = getattr(torch, dtype)
    best = {}
    with torch.no_grad():
        for m, k, n in shapes:
            a = torch.full((m, k), 0.01, dtype=dt)
            b = torch.full((k, n), 0.01, dtype=dt)
            a @ b
            reps, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < 1.5:
                a @ b
                reps += 1
            best[f"{m}x{k}x{n}"] = 2 * m * k * n * reps / (time.perf_counter() - t0)
    return best


# ----------------------------------------------------------------------------- TRL worker


def trl_worker(args) -> dict:
    import random

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from jaxevo.weights.load import hf_dir_for

    torch.manual_seed(0)
    d = hf_dir_for(MODEL)
    tok = AutoTokenizer.from_pretrained(d)
    # fp32 weights; bf16=True below autocasts the compute (the counterpart of jaxevo's bf16 copy).
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
    rng = random.Random(0)
    rows = [{"prompt": _text(rng, args.prompt_tokens), "chosen": " " + _text(rng, args.length),
             "rejected": " " + _text(rng, args.length)} for _ in range(args.pairs)]
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t0)

    with tempfile.TemporaryDirectory() as tmp:
        cfg = DPOConfig(output_dir=tmp, per_device_train_batch_size=args.pairs,
                        gradient_accumulation_steps=1, max_length=args.length, beta=0.1,
                        learning_rate=1e-6, lr_scheduler_type="constant", max_steps=args.steps + 1,
                        precompute_ref_log_probs=True, use_cpu=True, bf16=args.dtype == "bfloat16",
                        fp16=False, logging_steps=1, report_to=[], save_strategy="no",
                        dataloader_num_workers=0, seed=0, weight_decay=0.0, max_grad_norm=1.0,
                        dataset_num_proc=None)
        trainer = DPOTrainer(model=model, args=cfg, processing_class=tok,
                             train_dataset=Dataset.from_list(rows), callbacks=[Timer()])
        ds = trainer.train_dataset
        ids = [{k: list(ds[i][k]) for k in ("prompt_ids", "chosen_ids", "rejected_ids")}
               for i in range(len(ds))]
        t0 = time.perf_counter()
        trainer.train()
        total = time.perf_counter() - t0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    steady = sorted(times[1:])
    return {"s_per_step": steady[0], "median_s_per_step": steady[len(steady) // 2],
            "step_times": times, "losses": losses, "train_s": total, "peak_rss_mb": _rss_mb(), "ids": ids,
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "matmul_flops": matmul_peak_torch(args.dtype, args.shapes)}


# ----------------------------------------------------------------------------- jaxevo worker


def jax_worker(args, ids) -> dict:
    import jax
    import numpy as np

    from jaxevo.sharding import make_mesh, param_shardings
    from jaxevo.train.batches import TokenizedData
    from jaxevo.train.builder import build_step
    from jaxevo.train.config import ModelSection, ObjectiveSection, OptimSection, TrainConfig
    from jaxevo.train.precision import compute_copy, rounding_key
    from jaxevo.train.reference import attach_reference, compute_reference_logps
    from jaxevo.train.state import init_state
    from jaxevo.train.step import finalize_metrics
    from jaxevo.weights.load import load_pretrained

    mesh = make_mesh((1, -1, 1))
    pre = load_pretrained(MODEL, dtype=args.dtype, param_dtype="float32", remat=args.remat, mesh=mesh)
    cfg = pre.cfg
    # The exact token ids and prompt/completion split TRL trained on, truncated like TRL.
    n, t = len(ids), args.length
    arrays = {}
    for view in ("chosen", "rejected"):
        a = {k: np.zeros((n, t), np.int32) for k in ("tokens", "labels", "segments", "positions")}
        a["labels"][:] = -1
        for i, r in enumerate(ids):
            seq = (r["prompt_ids"] + r[f"{view}_ids"])[:t]
            p = len(r["prompt_ids"])
            L = len(seq)
            a["tokens"][i, :L] = seq
            a["segments"][i, :L] = 1
            a["positions"][i, :L] = np.arange(L)
            a["labels"][i, p - 1: L - 1] = seq[p:]
        arrays.update({f"{view}/{k}": v for k, v in a.items()})
    data = TokenizedData(arrays=arrays, views=("chosen", "rejected"), stats={})
    tcfg = TrainConfig(batch_size=n, logprob_chunk=args.chunk, vocab_chunk=args.vocab_chunk,
                       model=ModelSection(dtype=args.dtype, rounding=args.rounding),
                       objective=ObjectiveSection(name="preference", loss_type="sigmoid", beta=0.1),
                       optim=OptimSection(lr=1e-6, schedule="constant", clip_norm=1.0))
    ap = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), pre.params)
    parts = build_step(tcfg, cfg, mesh, ap, 100)  # the step `jaxevo train` builds
    p_sh = param_shardings(cfg, mesh)
    t0 = time.perf_counter()
    ref_params = jax.jit(compute_copy, static_argnums=(1, 2))(pre.params, args.rounding, args.dtype,
                                                              rounding_key(tcfg.seed))  # as `build`
    ref = compute_reference_logps(ref_params, cfg, data, parts.objective.view_names, mesh=mesh,
                                  param_shardings=p_sh, batch_size=n, chunk=args.chunk,
                                  pad_to_multiple=1)
    ref_s = time.perf_counter() - t0
    del ref_params
    data = attach_reference(data, ref)
    state = init_state(pre.params, parts.tx, 0, parts.state_shardings)
    del pre
    step = parts.step
    batch = data.take(np.arange(n), 1)
    times, losses = [], []
    for _ in range(args.steps + 1):
        t0 = time.perf_counter()
        state, m = step(state, batch)
        m = finalize_metrics(jax.device_get(m))
        times.append(time.perf_counter() - t0)
        losses.append(m["loss"])
    steady = sorted(times[1:])
    return {"dtype": args.dtype, "rounding": args.rounding,
            "s_per_step": steady[0], "median_s_per_step": steady[len(steady) // 2],
            "step_times": times, "losses": losses, "compile_plus_first_s": times[0], "reference_s": ref_s, "peak_rss_mb": _rss_mb(),
            "jax": jax.__version__, "devices": str(jax.devices()),
            "matmul_flops": matmul_peak_jax(args.dtype, args.shapes)}


# ----------------------------------------------------------------------------- driver


def flops_per_step(pairs: int, length: int) -> float:
    from jaxevo.models.config import ModelConfig
    from jaxevo.weights.load import hf_dir_for

    return train_flops(ModelConfig.from_hf(hf_dir_for(MODEL)), 2 * pairs, length)


def _run(mode: str, args, extra: list[str]) -> dict:
    return run_worker(__file__, mode, extra)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--rounding", default="stochastic", choices=["stochastic", "nearest"],
                    help="jaxevo's bf16 compute copy (model.rounding)")
    ap.add_argument("--also", nargs="*", default=[],
                    help="more jaxevo arms on the same ids, each dtype[:rounding]")
    ap.add_argument("--chunk", type=int, default=64, help="jaxevo log-prob sequence chunk")
    ap.add_argument("--vocab-chunk", type=int, default=None)
    ap.add_argument("--remat", default="dots_no_batch",
                    help="jaxevo remat policy (dots_no_batch: keep weight matmuls, recompute attention)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--ids", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.prompt_tokens = 48
    tokens = 2 * args.pairs * args.length
    # train-step-shaped matmuls: QKV/MLP projections and the LM head over all tokens
    args.shapes = [(tokens, 576, 1536), (tokens, 1536, 576), (tokens, 576, 576), (1024, 576, 8192)]

    if args.worker:
        load0 = os.getloadavg()
        res = trl_worker(args) if args.worker == "trl" else jax_worker(
            args, json.loads(Path(args.ids).read_text()))
        res["load_avg"] = {"start": load0, "end": os.getloadavg()}
        Path(args.worker_out).write_text(json.dumps(res))
        return

    common = ["--steps", str(args.steps), "--pairs", str(args.pairs), "--length",
              str(args.length), "--dtype", args.dtype, "--chunk", str(args.chunk),
              "--remat", args.remat, "--rounding", args.rounding] + (["--vocab-chunk", str(args.vocab_chunk)] if args.vocab_chunk else [])
    t0 = time.time()
    trl = _run("trl", args, common)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(trl.pop("ids"), f)
    jx = _run("jax", args, common + ["--ids", f.name])
    extra = {}
    for arm in args.also:
        dtype, _, rounding = arm.partition(":")
        argv = [a for a in common]
        argv[argv.index("--dtype") + 1] = dtype
        argv[argv.index("--rounding") + 1] = rounding or args.rounding
        extra[arm] = _run("jax", args, argv + ["--ids", f.name])
    os.unlink(f.name)
    flops = flops_per_step(args.pairs, args.length)
    report = {"config": {k: getattr(args, k) for k in ("steps", "pairs", "length", "dtype", "chunk",
                                                       "vocab_chunk", "remat")},
              "machine": {"cpu": platform.processor() or platform.machine(),
                          "cores": os.cpu_count(), "load_avg_start": os.getloadavg()},
              "flops_per_step": flops}
    for name, r in (("trl", trl), ("jaxevo", jx)):
        peak = max(r["matmul_flops"].values())
        r["matmul_peak_gflops"] = peak / 1e9
        r["mfu"] = flops / r["s_per_step"] / peak
        r["achieved_gflops"] = flops / r["s_per_step"] / 1e9
        report[name] = r
    for arm, r in extra.items():
        r["vs_main_arm_speed"] = r["s_per_step"] / jx["s_per_step"]
        report[f"jaxevo {arm}"] = r
    report["speedup"] = trl["s_per_step"] / jx["s_per_step"]
    report["memory_ratio"] = jx["peak_rss_mb"] / trl["peak_rss_mb"]
    report["wall_s"] = time.time() - t0
    report["machine"]["load_avg_end"] = os.getloadavg()
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(text)
    print(f"\nDPO step, {args.pairs} pairs x {args.length} tokens, {args.dtype}: "
          f"TRL {trl['s_per_step']:.2f} s/step ({trl['peak_rss_mb']:.0f} MB peak, MFU "
          f"{trl['mfu']:.0%}), jaxevo {jx['s_per_step']:.2f} s/step ({jx['peak_rss_mb']:.0f} MB, "
          f"MFU {jx['mfu']:.0%}); speedup {report['speedup']:.2f}x")
    print(f"losses: TRL {[round(x, 5) for x in trl['losses']]}")
    print(f"        jaxevo {args.dtype}/{args.rounding} {[round(x, 5) for x in jx['losses']]}")
    for arm, r in extra.items():
        print(f"        jaxevo {arm} {[round(x, 5) for x in r['losses']]}: {r['s_per_step']:.2f} "
              f"s/step, {jx['s_per_step'] / r['s_per_step']:.2f}x the main arm's speed")


if __name__ == "__main__":
    main()
