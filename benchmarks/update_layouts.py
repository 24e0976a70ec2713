"""The demo's online update in the rollout layouts the `grpo` stage can use, timed in turns.

    python benchmarks/update_layouts.py [--steps 4] [--share 1 4 8] [--flat 0] [--pad 32]
                                        [--model M] [--out benchmarks/results/update_layouts.json]

The update of `configs/grpo_quick.yaml` (SmolLM2-135M-Instruct, bf16 compute on f32 master
weights, stochastic rounding, `dots_no_batch` remat, DAPO loss, β = 0, micro-batches of 8
completions) on one synthetic rollout batch: 4 prompts of 55-76 tokens x 8 completions of 20-96
tokens (the demo's prompt lengths and rollout limit), ``--flat`` of the groups with advantage 0
(dynamic sampling's filler groups). Layouts: ``--share 1``, a row per completion (TRL's layout;
the flat groups' rows gathered into the last micro-batches, which the step skips), and
``--share K``, rows of a prompt run once and K of its completions (`grpo.share_prompt`). Each
layout's step is compiled first, then the layouts take turns, ``--steps`` timed steps each; the
best and the median seconds are printed with the ratio to ``--share 1``, with the machine's CPU
model and whether it has AMX. ``--model`` (default the demo's) takes any model `jaxevo` loads.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from generate_e2e import cpu_facts
from jaxevo.config import load_config
from jaxevo.evolve.config import EvolveConfig
from jaxevo.sharding import make_mesh, param_shardings
from jaxevo.train.builder import build_step
from jaxevo.train.rollout import update_batch
from jaxevo.train.state import init_state
from jaxevo.train.step import fetch, finalize_metrics, to_global
from jaxevo.weights.load import load_pretrained

ROOT = Path(__file__).resolve().parents[1]
PROMPTS, GROUP, MICRO = 4, 8, 8


def rollouts(flat: int, vocab: int, seed: int = 0):
    """P prompts, P·G completions (group after group), advantages with `flat` groups at 0; token
    ids from [100, 40000), or from the whole vocabulary of a model with fewer (a test's tiny one)."""
    rng = np.random.default_rng(seed)
    lo, hi = (100, 40000) if vocab >= 40000 else (0, vocab)
    prompts, comps = [], []
    for _ in range(PROMPTS):
        prompts.append(list(rng.integers(lo, hi, rng.integers(55, 77))))
        comps += [list(rng.integers(lo, hi, rng.integers(20, 97))) for _ in range(GROUP)]
    adv = rng.normal(size=PROMPTS * GROUP).astype(np.float32)
    adv[(PROMPTS - flat) * GROUP:] = 0.0
    return prompts, comps, adv


def layout(k: int, prompts, comps, adv, pad: int):
    """The batch the `grpo` stage builds with share_prompt=k, and its rows and micro-batch rows."""
    rows, micro = PROMPTS * GROUP // k, MICRO // k
    batch = update_batch([prompts[i // GROUP] for i in range(len(comps))], comps, adv, per_row=k,
                         num_micro=rows // micro, pad_to_multiple=pad)
    return batch, rows, micro


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--share", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--flat", type=int, default=0, help="groups with advantage 0 (of 4)")
    ap.add_argument("--pad", type=int, default=32)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    cfg = load_config(EvolveConfig, ROOT / "configs" / "grpo_quick.yaml", [])
    g = cfg.grpo
    obj = dataclasses.replace(g.train.objective, name="policy", loss_type=g.loss_type, beta=0.0,
                              hparams={"epsilon_low": g.epsilon_low, "epsilon_high": g.epsilon_high,
                                       "max_completion_length": cfg.sample.max_new_tokens})
    mesh = make_mesh(g.train.mesh)
    tm = g.train.model
    pre = load_pretrained(args.model, dtype=tm.dtype, param_dtype=tm.param_dtype, remat=tm.remat,
                          mesh=mesh)
    params = jax.device_put(pre.params, param_shardings(pre.cfg, mesh))
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    prompts, comps, adv = rollouts(args.flat, pre.cfg.vocab_size)
    arms = {}
    for k in args.share:
        batch, rows, micro = layout(k, prompts, comps, adv, args.pad)
        tc = g.train.replace(out_dir="/tmp/update_layouts", batch_size=rows, micro_batch_size=micro, objective=obj)
        parts = build_step(tc, pre.cfg, mesh, abstract, 100)
        state = init_state(jax.tree.map(jnp.copy, params), parts.tx, 0, parts.state_shardings)
        gb = to_global(batch, mesh)
        t = time.perf_counter()
        state, raw = parts.step(state, gb)
        first = finalize_metrics(fetch(raw))
        arms[k] = {"parts": parts, "state": state, "batch": gb, "times": [],
                   "first_s": time.perf_counter() - t, "loss": first["loss"], "grad_norm": first["grad_norm"],
                   "shape": list(batch.views["completion"]["tokens"].shape),
                   "tokens": int(np.count_nonzero(batch.views["completion"]["segments"]))}
    for _ in range(args.steps):
        for a in arms.values():
            t = time.perf_counter()
            a["state"], raw = a["parts"].step(a["state"], a["batch"])
            jax.block_until_ready(raw)
            a["times"].append(time.perf_counter() - t)
    base = statistics.median(arms[args.share[0]]["times"])
    out = {"machine": cpu_facts(), "model": args.model, "flat_groups": args.flat, "pad": args.pad, "arms": {}}
    print(f"{out['machine']}\nflat groups: {args.flat} of {PROMPTS}; rows padded to {args.pad}")
    for k, a in arms.items():
        med = statistics.median(a["times"])
        out["arms"][str(k)] = {key: a[key] for key in ("shape", "tokens", "first_s", "times", "loss", "grad_norm")}
        print(f"share_prompt={k}: rows x length {a['shape']}, {a['tokens']} tokens; first step {a['first_s']:.1f} s "
              f"(compiling); best {min(a['times']):.2f} s, median {med:.2f} s: {base / med:.2f}x share_prompt="
              f"{args.share[0]}; first loss {a['loss']:.6f}, grad norm {a['grad_norm']:.4f}")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
