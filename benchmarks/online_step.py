"""One online RL step (sample G x P completions, score, one update): jaxevo vs TRL's GRPOTrainer.

    python benchmarks/online_step.py [--steps 3] [--prompts 4] [--group 4] [--max-new 64]
                                     [--dtype float32] [--share-prompt 1 [4 ...]]
                                     [--out benchmarks/results/online_step.json]

* Model: SmolLM2-135M-Instruct (the embedded default; TRL reads the same converted HF directory).
* Task: the demo's arithmetic word problems (the same prompts, chat template on both sides),
  rewarded by the same check (`jaxevo.data.answers`: 1 when the stated answer is right).
* Same settings both sides: P prompts x G completions per step, ``--max-new`` new tokens,
  temperature 0.8, DAPO loss (ε 0.2 / 0.28), β = 0, μ = 1, AdamW lr 1e-5, one optimiser step
  per generation batch, ``--dtype`` for weights and compute. TRL generates with transformers'
  ``generate`` (no vLLM); jaxevo with its sampler on the train state's parameters
  (`jaxevo.evolve.online.run_online`, what the `grpo` stage runs), its update with a prompt and
  K of its completions a row (`grpo.share_prompt`; 1: a row per completion), one jaxevo run per K
  of ``--share-prompt``.
* Each framework runs in its own subprocess; s/step is the best (min) of ``--steps`` steps after
  one warm-up step (compilation for jaxevo), the median too. Completions are random, so their
  lengths differ between the two: tokens/s (sampled tokens / step time) is reported beside s/step.
  Peak RSS is the subprocess's ``ru_maxrss``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from _worker import run_worker
from generate_e2e import cpu_facts

MODEL = "smollm2-135m-instruct"
SOURCE = {"type": "arithmetic", "split": "train", "n": 256, "levels": [1, 2]}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _items(n: int) -> list[dict]:
    from jaxevo.data import load_source

    return [dict(r) for r in load_source(SOURCE)][:n]


def _reward(text: str, gold: str) -> float:
    from jaxevo.data.answers import answers_match, extract_answer

    return float(answers_match(extract_answer(text), gold))


# ----------------------------------------------------------------------------- TRL worker


def trl_worker(args) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from jaxevo.weights.load import hf_dir_for

    torch.manual_seed(0)
    d = hf_dir_for(MODEL)
    tok = AutoTokenizer.from_pretrained(d)
    model = AutoModelForCausalLM.from_pretrained(d, dtype=getattr(torch, args.dtype))
    n = args.prompts * (args.steps + 1)
    rows = [{"prompt": [{"role": "user", "content": it["prompt"]}], "answer": it["answer"]} for it in _items(n)]

    def verifier(completions, answer, **kw):
        return [_reward(c[0]["content"] if isinstance(c, list) else c, a) for c, a in zip(completions, answer)]

    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t0)

    with tempfile.TemporaryDirectory() as tmp:
        cfg = GRPOConfig(output_dir=tmp, per_device_train_batch_size=args.prompts * args.group,
                         num_generations=args.group, max_completion_length=args.max_new, temperature=0.8,
                         loss_type="dapo", epsilon=0.2, epsilon_high=0.28, beta=0.0, learning_rate=1e-5,
                         lr_scheduler_type="constant", max_steps=args.steps + 1, gradient_accumulation_steps=1,
                         use_cpu=True, bf16=args.dtype == "bfloat16", fp16=False, logging_steps=1,
                         report_to=[], save_strategy="no", dataloader_num_workers=0, seed=0, shuffle_dataset=False,
                         weight_decay=0.0, max_grad_norm=1.0)
        trainer = GRPOTrainer(model=model, reward_funcs=verifier, args=cfg, processing_class=tok,
                              train_dataset=Dataset.from_list(rows), callbacks=[Timer()])
        trainer.train()
    logs = [h for h in trainer.state.log_history if "completions/mean_length" in h]
    lengths = [h["completions/mean_length"] for h in logs]
    tok_s = [args.prompts * args.group * n_ / t for n_, t in zip(lengths, times)]
    steady = sorted(times[1:])
    return {"s_per_step": steady[0], "median_s_per_step": steady[len(steady) // 2], "step_times": times,
            "mean_lengths": lengths, "tokens_per_s": max(tok_s[1:]), "rewards": [h.get("reward") for h in logs],
            "peak_rss_mb": _rss_mb(), "threads": torch.get_num_threads(), "torch": torch.__version__}


# ----------------------------------------------------------------------------- jaxevo worker


def jax_worker(args) -> dict:
    import jax

    from jaxevo.config import load_config
    from jaxevo.evolve.config import EvolveConfig
    from jaxevo.evolve.online import run_online
    from jaxevo.evolve.scorers import register_scorer
    from jaxevo.sampling.api import SamplingParams
    from jaxevo.sharding import make_mesh

    @register_scorer("bench_verifier")
    def bench_verifier(group, params):
        return [_reward(r["text"], group["item"]["answer"]) for r in group["responses"]]

    root = Path(__file__).resolve().parents[1]
    cfg = load_config(EvolveConfig, root / "configs" / "grpo.yaml", [
        f"grpo.steps={args.steps + 1}", f"grpo.prompts_per_step={args.prompts}", f"grpo.group_size={args.group}",
        "grpo.micro_batch_size=null", "grpo.checkpoint_every=0", "grpo.rewards={bench_verifier: 1.0}",
        f"sample.max_new_tokens={args.max_new}", f"sample.batch_size={args.prompts * args.group}",
        f"grpo.train.model.dtype={args.dtype}", "grpo.train.data.pad_to_multiple=32",
        f"grpo.share_prompt={args.share_prompt[0]}"])
    mesh = make_mesh((1, -1, 1))
    c = cfg.sample
    ctx = SimpleNamespace(
        cfg=cfg, mesh=mesh, seed=0, progress=False, stop_at=None, release_samplers=lambda: None,
        sampling=lambda m, t, n, salt, answers=False: SamplingParams(max_new_tokens=m, temperature=t, n=n, top_p=c.top_p,
                                                      top_k=c.top_k, min_p=c.min_p, seed=salt))
    with tempfile.TemporaryDirectory() as tmp:
        res = run_online(ctx, Path(tmp), _items(args.prompts * (args.steps + 1)), MODEL)
    h = res.history
    times = [m["step_time_s"] for m in h]
    steady = sorted(times[1:])
    return {"s_per_step": steady[0], "median_s_per_step": steady[len(steady) // 2], "step_times": times,
            "sample_s": [m["sample_s"] for m in h], "train_s": [m["train_s"] for m in h],
            "mean_lengths": [m["completions/mean_length"] for m in h],
            "tokens_per_s": max(m["tokens_per_s"] for m in h[1:]), "rewards": [m["reward"] for m in h],
            "peak_rss_mb": _rss_mb(), "jax": jax.__version__, "devices": str(jax.devices())}


# ----------------------------------------------------------------------------- driver


def _run(mode: str, extra: list[str]) -> dict:
    return run_worker(__file__, mode, extra)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--max-new", type=int, default=64)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--share-prompt", type=int, nargs="+", default=[1],
                    help="jaxevo: completions a row of the update; one jaxevo run per value")
    ap.add_argument("--out", default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        load0 = os.getloadavg()
        res = trl_worker(args) if args.worker == "trl" else jax_worker(args)
        res["load_avg"] = {"start": load0, "end": os.getloadavg()}
        Path(args.worker_out).write_text(json.dumps(res))
        return
    common = ["--steps", str(args.steps), "--prompts", str(args.prompts), "--group", str(args.group),
              "--max-new", str(args.max_new), "--dtype", args.dtype]
    t0 = time.time()
    trl = _run("trl", common)
    arms = {k: _run("jax", common + ["--share-prompt", str(k)]) for k in args.share_prompt}
    jx = arms[args.share_prompt[0]]
    report = {"config": {k: getattr(args, k) for k in ("steps", "prompts", "group", "max_new", "dtype", "share_prompt")},
              "machine": cpu_facts(),  # model name and bf16 flags: the ratio depends on them
              "trl": trl, "jaxevo": jx, "jaxevo_by_share_prompt": arms,
              "speedup": trl["s_per_step"] / jx["s_per_step"],
              "tokens_per_s_ratio": jx["tokens_per_s"] / trl["tokens_per_s"],
              "memory_ratio": jx["peak_rss_mb"] / trl["peak_rss_mb"], "wall_s": time.time() - t0}
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(text)
    print(f"\nonline step, {args.prompts} prompts x {args.group} completions x <= {args.max_new} tokens, "
          f"{args.dtype}: TRL {trl['s_per_step']:.2f} s/step ({trl['tokens_per_s']:.0f} tok/s, "
          f"{trl['peak_rss_mb']:.0f} MB peak)")
    for k, r in arms.items():
        print(f"  jaxevo, share_prompt {k}: {r['s_per_step']:.2f} s/step ({r['tokens_per_s']:.0f} tok/s, "
              f"{r['peak_rss_mb']:.0f} MB); speedup {trl['s_per_step'] / r['s_per_step']:.2f}x, "
              f"tokens/s {r['tokens_per_s'] / trl['tokens_per_s']:.2f}x")


if __name__ == "__main__":
    main()
