"""Sampler throughput: jaxevo vs transformers `generate` (f32 and bf16) on SmolLM2-135M-Instruct.

    python benchmarks/sampler.py                      # 64 prompts x 128 new tokens, T = 0.8, + batch 1
    python benchmarks/sampler.py --quick              # smaller, for a smoke run
    python benchmarks/sampler.py --out benchmarks/results/sampler.json
    python benchmarks/sampler.py --model DIR          # any HF dir (random weights: random_hf_dir.py)

Every system runs in its own subprocess, one after the other, on the same chat prompts (token ids
made once by jaxevo's tokenizer; left-padded for transformers) and generates exactly
`--new-tokens` tokens per row (stop tokens off on both sides, so the work is identical; sampling at
`--temperature`, no top-k / top-p). Throughput = generated tokens / wall time of the whole call
(prefill included), best of `--repeats` timed runs after one warm-up (compilation) run.

The compute-bound limit of the JAX backend is measured in the jaxevo worker: the best FLOP/s of
XLA's dot on decode-shaped operands (batch x 576 @ 576 x 1536, bf16 inputs, f32 accumulation — the
sampler's recipe) divided by 2 x params FLOPs per token. Absolute numbers on a shared CPU mean
little; the ratios measured side by side are the point. llama-cpp-python (on the original 4-bit
GGUF, batch 1) runs only when it is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODEL = "smollm2-135m-instruct"
SUBJECTS = ["apples", "marbles", "books", "coins", "stickers", "pencils", "cookies", "cards"]


def make_questions(n: int) -> list[str]:
    """Varied-length arithmetic word problems with a step-by-step instruction (the round driver's
    typical workload)."""
    qs = []
    for i in range(n):
        a, b, c = 3 + (7 * i) % 40, 2 + (5 * i) % 17, 1 + (3 * i) % 9
        s = SUBJECTS[i % len(SUBJECTS)]
        q = f"Sam has {a} {s}. He gets {b} more"
        if i % 2:
            q += f" and then gives {c} to his sister, who already had {a + c} {s} of her own"
        if i % 3 == 0:
            q += ". Later his friend Alex, who collects them too, asks how many he has left"
        q += f". How many {s} does Sam have now?"
        if i % 4 == 0:
            q += " Think step by step, then give the final answer as 'The answer is N'."
        qs.append(q)
    return qs


# --------------------------------------------------------------------------------- workers
def _best(times):
    return min(times), statistics.median(times)


def worker_jaxevo(args) -> dict:
    import jax
    import jax.numpy as jnp

    from jaxevo.sampling import Sampler, SamplingParams

    res = {"system": f"jaxevo {args.dtype}", "jax": jax.__version__, "device": str(jax.devices()[0])}
    # Decode-shaped matmul peak of XLA (the sampler's dtype recipe), best of many.
    for name, dt in (("bf16_in_f32_acc", jnp.bfloat16), ("f32", jnp.float32)):
        a, w = jnp.ones((args.prompts, 576), dt), jnp.ones((576, 1536), dt)
        f = jax.jit(lambda a, w: jnp.einsum("be,ef->bf", a, w, preferred_element_type=jnp.float32))
        f(a, w).block_until_ready()
        best = 1e9
        for _ in range(7):
            t = time.perf_counter()
            for _ in range(30):
                r = f(a, w)
            r.block_until_ready()
            best = min(best, (time.perf_counter() - t) / 30)
        res[f"matmul_gflops_{name}"] = 2 * args.prompts * 576 * 1536 / best / 1e9

    s = Sampler.load(args.model, dtype=args.dtype, max_batch=args.prompts)
    res["params"] = s.cfg.num_params()
    res.update(_weights_pass(s, args.prompts))  # also makes the weights: the CPU choice is known
    res["cpu_choice"] = f"{s.cpu_choice.path}:{s.cpu_choice.matmul_dtype}:{s.cpu_choice.scores} ({s.cpu_choice.source})"
    ids = s.encode(make_questions(args.prompts))
    res["prompt_tokens"] = [len(i) for i in ids]
    sp = SamplingParams(max_new_tokens=args.new_tokens, temperature=args.temperature, stop_token_ids=(),
                        seed=0)
    for label, batch in (("batch", ids), ("batch1", ids[len(ids) // 2:len(ids) // 2 + 1])):
        if label == "batch1" and args.no_batch1:
            continue
        if label == "batch1":  # a one-row sampler (`--batch-size 1`): its own CPU choice
            s = Sampler(s.cfg, s.params, s.tokenizer, max_batch=1)
            s.weights  # noqa: B018 (made now: the choice is reported)
            res["cpu_choice_batch1"] = f"{s.cpu_choice.path}:{s.cpu_choice.matmul_dtype}:{s.cpu_choice.scores} ({s.cpu_choice.source})"
        s.generate_ids(batch, sp)  # compile
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            outs = s.generate_ids(batch, sp)
            times.append(time.perf_counter() - t)
        n = sum(c.length for o in outs for c in o)
        assert n == len(batch) * args.new_tokens, n
        best, med = _best(times)
        res[label] = {"rows": len(batch), "tokens": n, "best_s": best, "median_s": med,
                      "tok_s": n / best, "shapes": sorted(map(list, s.last_stats.shapes))}
        # Prefill share: the same batch with 1 new token (prefill + one sampled token).
        sp1 = SamplingParams(max_new_tokens=1, temperature=args.temperature, stop_token_ids=())
        s.generate_ids(batch, sp1)
        t1 = min(_timed(lambda: s.generate_ids(batch, sp1)) for _ in range(args.repeats))
        res[label]["prefill_s"] = t1
        res[label]["decode_tok_s"] = len(batch) * (args.new_tokens - 1) / max(best - t1, 1e-9)
    return res


def _weights_pass(s, rows: int) -> dict:
    """Every matmul of one decode step at `rows` rows, on the sampler's own prepared weights and
    dtype recipe, and nothing else: the bound a decode step meets when each weight matrix has to
    come from memory once per step (the repeated single-matrix probe above keeps its 3.5 MB
    operand in cache; a decode step streams all of them)."""
    import jax
    import jax.numpy as jnp

    from jaxevo.models.layers import FUSED, dense

    w = s.weights
    # the layers' matrices are stored [in, out], the head [out, in] (the decode layout)
    mats = [lw[part][k] for lw in w["layers"] for part, k in (("attn", "qkv"), ("attn", "o"), ("mlp", "gate_up"),
                                                           ("mlp", "down"))]
    head = w["lm_head"]
    dims = sorted({m.shape[0] for m in mats} | {head.shape[1]})
    xs = {str(d): jnp.ones((rows, 1, d), s.cfg.dtype) for d in dims}

    @jax.jit
    def one_pass(xs, mats, head):  # independent products: only the matmuls, each weight read once
        return (sum(dense(xs[str(m.shape[0])], m, FUSED, s.cfg.dtype)[0, 0, 0] for m in mats)
                + dense(xs[str(head.shape[1])], head, "...i,oi->...o", s.cfg.dtype)[0, 0, 0])

    one_pass(xs, mats, head).block_until_ready()
    best = min(_timed(lambda: one_pass(xs, mats, head).block_until_ready()) for _ in range(7))
    mats = mats + [head]
    return {"weights_pass_s": best, "weight_bytes": sum(m.nbytes for m in mats),
            "weights_pass_tok_s": rows / best,
            "weights_pass_gflops": 2 * rows * sum(m.size for m in mats) / best / 1e9}


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def worker_transformers(args) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from jaxevo.tokenizer import chat_prompt
    from jaxevo.weights.load import hf_dir_for, load_tokenizer

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    # On a GPU machine transformers runs on the same GPU as jaxevo (the 3x is "on the same GPU").
    device = "cuda" if torch.cuda.is_available() else "cpu"
    res = {"system": f"transformers {args.dtype}", "torch": torch.__version__, "device": device}
    if device == "cpu":
        # torch's OpenMP threads busy-wait at every parallel region: on an oversubscribed machine one
        # descheduled thread stalls the rest (docs/benchmarks.md, Sampler). Give torch its best
        # thread count, chosen by its matmul speed.
        a, w = torch.ones(args.prompts, 576, dtype=dtype), torch.ones(576, 1536, dtype=dtype)
        gflops = {}
        for threads in sorted({os.cpu_count() or 1, 1}, reverse=True):
            torch.set_num_threads(threads)
            best = 1e9
            for _ in range(7):
                t = time.perf_counter()
                for _ in range(30):
                    a @ w
                best = min(best, (time.perf_counter() - t) / 30)
            gflops[threads] = 2 * args.prompts * 576 * 1536 / best / 1e9
        res["threads"] = max(gflops, key=gflops.get)
        torch.set_num_threads(res["threads"])
        res["matmul_gflops_by_threads"] = gflops

    d = args.model if Path(args.model).is_dir() else hf_dir_for(args.model)
    tok = load_tokenizer(d)
    import transformers

    res["transformers"] = transformers.__version__
    model = AutoModelForCausalLM.from_pretrained(d, dtype=dtype).eval().to(device)
    ids = [tok(chat_prompt(tok, q), add_special_tokens=False)["input_ids"] for q in make_questions(args.prompts)]
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0

    def run(batch, new):
        width = max(map(len, batch))
        inp = torch.tensor([[pad] * (width - len(p)) + p for p in batch], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=device)
        with torch.inference_mode():
            out = model.generate(inp, attention_mask=mask, do_sample=True, temperature=args.temperature,
                                 top_k=0, top_p=1.0, max_new_tokens=new, min_new_tokens=new,
                                 pad_token_id=pad, eos_token_id=None)
        if device == "cuda":
            torch.cuda.synchronize()
        return out.shape[0] * (out.shape[1] - width)

    for label, batch in (("batch", ids), ("batch1", ids[len(ids) // 2:len(ids) // 2 + 1])):
        if label == "batch1" and args.no_batch1:
            continue
        torch.manual_seed(0)
        run(batch, 4)  # warm-up
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            n = run(batch, args.new_tokens)
            times.append(time.perf_counter() - t)
        best, med = _best(times)
        res[label] = {"rows": len(batch), "tokens": n, "best_s": best, "median_s": med, "tok_s": n / best}
    return res


def worker_llamacpp(args) -> dict:
    import llama_cpp

    from jaxevo.weights.embedded import resolve_embedded

    llm = llama_cpp.Llama(model_path=str(resolve_embedded(MODEL)), n_ctx=1024, n_threads=os.cpu_count(),
                          verbose=False, seed=0)
    msgs = [{"role": "user", "content": make_questions(args.prompts)[args.prompts // 2]}]
    llm.create_chat_completion(msgs, max_tokens=4, temperature=args.temperature)
    times, n = [], 0
    for _ in range(args.repeats):
        t = time.perf_counter()
        out = llm.create_chat_completion(msgs, max_tokens=args.new_tokens, temperature=args.temperature,
                                         top_k=0, top_p=1.0)
        times.append(time.perf_counter() - t)
        n = out["usage"]["completion_tokens"]
    best, med = _best(times)
    return {"system": "llama.cpp Q4_1", "llama_cpp": llama_cpp.__version__,
            "batch1": {"rows": 1, "tokens": n, "best_s": best, "median_s": med, "tok_s": n / best}}


WORKERS = {"jaxevo": worker_jaxevo, "transformers": worker_transformers, "llamacpp": worker_llamacpp}


# ------------------------------------------------------------------------------------ main
def spawn(kind: str, dtype: str, args) -> dict | None:
    cmd = [sys.executable, __file__, "--worker", kind, "--dtype", dtype, "--model", args.model,
           "--prompts", str(args.prompts),
           "--new-tokens", str(args.new_tokens), "--temperature", str(args.temperature),
           "--repeats", str(args.repeats)] + (
               ["--no-batch1"] if args.no_batch1 else [])
    load0 = os.getloadavg()[0]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"[{kind} {dtype}] failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["wall_s"] = time.perf_counter() - t
    res["loadavg"] = [load0, os.getloadavg()[0]]
    if "runs" in res:
        for name, r in res["runs"].items():
            print(f"  {res['system']} {name}: {r['tok_s']:.1f} tok/s (batch 1), "
                  f"{r['tokens']} tokens in {r['steps'] or r['tokens']} steps", flush=True)
        print(f"    (load {load0:.1f} -> {res['loadavg'][1]:.1f})")
        return res
    print(f"  {res['system']:24s} batch {res.get('batch', {}).get('tok_s', float('nan')):8.1f} tok/s"
          f"   batch 1 {res.get('batch1', {}).get('tok_s', float('nan')):6.1f} tok/s"
          f"   (load {load0:.1f} -> {res['loadavg'][1]:.1f})", flush=True)
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=MODEL,
                   help="embedded name or HF dir (e.g. random weights of the same architecture on a "
                        "machine without the embedded package: benchmarks/gpu_check.sh)")
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--repeats", type=int, default=1, help="timed runs per worker")
    p.add_argument("--rounds", type=int, default=2, help="rounds over all systems (alternating order)")
    p.add_argument("--no-batch1", action="store_true")
    p.add_argument("--quick", action="store_true", help="16 prompts x 32 tokens, 1 repeat")
    p.add_argument("--skip", action="append", default=[], help="skip a system: jaxevo-f32, transformers-f32, ...")
    p.add_argument("--out", default=None, help="write all results as JSON")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--dtype", default="bfloat16", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.prompts, args.new_tokens, args.repeats, args.rounds = 16, 32, 1, 1
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)))
        return 0

    print(f"sampler benchmark: {args.model}, {args.prompts} prompts x {args.new_tokens} new tokens, "
          f"T={args.temperature}, best of {args.repeats}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}", flush=True)
    runs = {}
    systems = [(k, d) for k, d in (("jaxevo", "bfloat16"), ("jaxevo", "float32"), ("transformers", "float32"),
                                   ("transformers", "bfloat16"))
               if f"{k}-{'f32' if d == 'float32' else 'bf16'}" not in args.skip]
    # The machine is shared: run the systems in rounds, alternating their order, and keep each
    # system's best result (batch and batch 1 separately), so no system owns the quiet minutes.
    for rnd in range(args.rounds):
        print(f" round {rnd + 1}/{args.rounds}", flush=True)
        for kind, dtype in (systems if rnd % 2 == 0 else systems[::-1]):
            res = spawn(kind, dtype, args)
            name = f"{kind} {dtype}"
            if res is None:
                continue
            best = runs.setdefault(name, res)
            for label in ("batch", "batch1"):
                if label in res and res[label]["tok_s"] >= best.get(label, {}).get("tok_s", 0):
                    best[label] = dict(res[label], loadavg=res["loadavg"], round=rnd + 1)
            for key in [k for k in res if k.startswith("matmul_gflops") and not isinstance(res[k], dict)]:
                best[key] = max(best.get(key, 0), res[key])
    try:
        import importlib.util

        if args.model != MODEL:
            print("  llama.cpp runs the embedded GGUF only: skipped")
        elif importlib.util.find_spec("llama_cpp") and "llamacpp" not in args.skip:
            runs["llama.cpp"] = spawn("llamacpp", "q4_1", args)
        else:
            print("  llama-cpp-python not installed: skipped")
    except Exception as e:  # pragma: no cover
        print(f"  llama.cpp skipped: {e}")

    def tps(name, label="batch"):
        r = runs.get(name)
        return (r or {}).get(label, {}).get("tok_s")

    jx = runs.get("jaxevo bfloat16") or {}
    summary = {}
    if jx:
        # The backend's limit: its best decode-shaped matmul over the dtype recipes, across all
        # jaxevo workers (on a CPU without native bf16 dots plain f32 is the faster one).
        probes = [r[k] for r in (runs.get("jaxevo bfloat16"), runs.get("jaxevo float32")) if r
                  for k in ("matmul_gflops_bf16_in_f32_acc", "matmul_gflops_f32") if k in r]
        gflops = max(probes)
        limit = gflops * 1e9 / (2 * jx["params"])
        summary["xla_matmul_gflops"] = gflops
        summary["xla_matmul_gflops_bf16_in_f32_acc"] = jx["matmul_gflops_bf16_in_f32_acc"]
        summary["xla_matmul_gflops_f32"] = jx["matmul_gflops_f32"]
        summary["compute_bound_limit_tok_s"] = limit
        summary["fraction_of_limit"] = tps("jaxevo bfloat16") / limit
        summary["weights_pass_tok_s"] = jx["weights_pass_tok_s"]
        summary["weights_pass_gflops"] = jx["weights_pass_gflops"]
        summary["fraction_of_weights_pass"] = tps("jaxevo bfloat16") / jx["weights_pass_tok_s"]
    for other in ("transformers bfloat16", "transformers float32", "jaxevo float32"):
        if tps("jaxevo bfloat16") and tps(other):
            summary[f"vs {other}"] = tps("jaxevo bfloat16") / tps(other)
        if tps("jaxevo bfloat16", "batch1") and tps(other, "batch1"):
            summary[f"batch1 vs {other}"] = tps("jaxevo bfloat16", "batch1") / tps(other, "batch1")
    if tps("jaxevo bfloat16", "batch1") and tps("llama.cpp", "batch1"):
        summary["batch1 vs llama.cpp"] = tps("jaxevo bfloat16", "batch1") / tps("llama.cpp", "batch1")

    print("\nsummary")
    if jx:
        print(f"  jaxevo's CPU choice (path:weights:scores): {jx.get('cpu_choice')} at {args.prompts} rows, "
              f"{jx.get('cpu_choice_batch1')} at 1 row")
    if "compute_bound_limit_tok_s" in summary:
        print(f"  XLA decode-shaped matmul ({args.prompts}x576 @ 576x1536), best: "
              f"{summary['xla_matmul_gflops']:.0f} GFLOP/s (bf16 in / f32 acc "
              f"{summary['xla_matmul_gflops_bf16_in_f32_acc']:.0f}, f32 {summary['xla_matmul_gflops_f32']:.0f})"
              f" -> compute-bound limit {summary['compute_bound_limit_tok_s']:.0f} tok/s")
        print(f"  jaxevo bf16 at batch {args.prompts}: {tps('jaxevo bfloat16'):.0f} tok/s = "
              f"{100 * summary['fraction_of_limit']:.0f}% of the limit (prefill included)")
        dec = jx["batch"].get("decode_tok_s")
        if dec:
            summary["decode_fraction_of_limit"] = dec / summary["compute_bound_limit_tok_s"]
            print(f"  jaxevo bf16 decode only (prefill {jx['batch']['prefill_s']:.1f}s of "
                  f"{jx['batch']['best_s']:.1f}s subtracted): {dec:.0f} tok/s = "
                  f"{100 * summary['decode_fraction_of_limit']:.0f}% of the limit")
        print(f"  all of a decode step's matmuls on the sampler's weights ({jx['weight_bytes'] / 1e6:.0f} MB "
              f"streamed per step): {summary['weights_pass_gflops']:.0f} GFLOP/s -> "
              f"{summary['weights_pass_tok_s']:.0f} tok/s; jaxevo reaches "
              f"{100 * summary['fraction_of_weights_pass']:.0f}% of it (prefill included)")
        if dec:
            summary["decode_fraction_of_weights_pass"] = dec / summary["weights_pass_tok_s"]
            print(f"  ... and {100 * summary['decode_fraction_of_weights_pass']:.0f}% in decode only")
    for k, v in summary.items():
        if k.startswith(("vs", "batch1 vs")):
            print(f"  jaxevo bf16 {k}: {v:.2f}x")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"args": vars(args), "runs": runs, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
