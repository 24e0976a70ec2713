"""Continuous batching vs one batch at a time, on a round's real sampling workload.

    python benchmarks/continuous.py [--prompts 64] [--n 4] [--max-new-tokens 128] [--greedy]

The embedded SmolLM2-135M-Instruct answers the demo's arithmetic prompts (train split, levels 1-2,
chat template, stop at end of turn; T = 0.8 and n samples, or greedy with n = 1 as in evaluation),
64 rows per decode call. Both modes run in this process on the same inputs, each once to compile
and then timed alternately (A B A B). Prints, per mode, the tokens generated, the best wall time and
tokens per second, how many completions are identical in both modes, and the speedup of
continuous batching in tokens per second (`Sampler(continuous=True)`, jaxevo/sampling/loop.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

MODEL = "smollm2-135m-instruct"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--greedy", action="store_true", help="greedy, n = 1 (the evaluation stage)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--model", default=MODEL, help="e.g. a trained round's model, which stops earlier")
    args = p.parse_args()

    from jaxevo.data.arithmetic import generate_arithmetic
    from jaxevo.sampling import Sampler, SamplingParams

    prompts = [r["prompt"] for r in generate_arithmetic(args.prompts, split="train", levels=(1, 2))]
    sp = (SamplingParams(max_new_tokens=args.max_new_tokens, temperature=0.0, n=1) if args.greedy else
          SamplingParams(max_new_tokens=args.max_new_tokens, temperature=0.8, n=args.n, seed=0))
    base = Sampler.load(args.model, dtype="bfloat16", max_batch=64)
    modes = {"one batch at a time": base,
             "continuous": Sampler(base.cfg, base.params, base.tokenizer, max_batch=64, continuous=True)}
    rows = len(prompts) * sp.n
    print(f"continuous batching: {args.model}, {len(prompts)} prompts x n={sp.n} = {rows} rows, "
          f"max {sp.max_new_tokens} new tokens, {'greedy' if args.greedy else 'T=0.8'}, 64 rows per call; "
          f"load {os.getloadavg()[0]:.1f}")
    outs, times, steps = {}, {k: [] for k in modes}, {}
    for k, s in modes.items():  # compile
        outs[k] = s.generate(prompts, sp, progress=False)
        steps[k] = (s.last_stats.decode_steps, s.last_stats.batches)
    for _ in range(args.repeats):
        for k, s in modes.items():
            t = time.perf_counter()
            s.generate(prompts, sp, progress=False)
            times[k].append(time.perf_counter() - t)
    for k in modes:
        tokens = sum(len(c.token_ids) for o in outs[k] for c in o)
        best = min(times[k])
        print(f"  {k:<20} {tokens:6d} tokens (mean {tokens / rows:5.1f} per row), {steps[k][0]} decode steps, "
              f"{steps[k][1]} prefills; best {best:6.1f} s "
              f"({' '.join(f'{x:.1f}' for x in times[k])})  {tokens / best:6.1f} tok/s")
    same = sum(a.token_ids == b.token_ids for o, p in zip(outs["continuous"], outs["one batch at a time"])
               for a, b in zip(o, p))
    print(f"  identical completions: {same} of {rows} (the rest differ by float rounding: a row's "
          f"prompt bucket can differ between the modes)")
    tps = {k: sum(len(c.token_ids) for o in outs[k] for c in o) / min(times[k]) for k in modes}
    print(f"  speedup of continuous batching (tok/s): {tps['continuous'] / tps['one batch at a time']:.2f}x; "
          f"load {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
