"""What one AdamW step does to the weights the forward sees, in fp32 and bf16 compute.

    python benchmarks/bf16_update.py [--lrs 1e-7 1e-6 1e-5 1e-4] [--out benchmarks/results/bf16_update.json]

Model: the embedded SmolLM2-135M-Instruct (fp32 master weights from its Q4_1 GGUF). Data: 8
arithmetic preference pairs (chosen: the right sum, rejected: a wrong one), DPO sigmoid, beta 0.1.
For each compute precision (fp32; bf16 rounded to nearest; bf16 rounded stochastically with the
run's fixed bits, jaxevo's default; bf16 stochastic with fresh bits per step, for comparison):

* the reference log-probs are the step-0 compute copy's (so step 1 has loss ln 2, margin 0);
* the gradient g at the master weights w0 through that copy, clipped to norm 1, gives AdamW's
  first update u(lr) = -lr * g / (|g| + eps) (bias-corrected moments g and g^2, no weight decay),
  w1 = w0 + u;
* for every lr: the fraction of compute-copy entries that changed, |copy(w1) - copy(w0)| / |u|
  (the effective update's norm against the optimizer's), <copy(w1) - copy(w0), u> / <u, u> (how
  far along the optimizer's direction the copy moved, 1 = as asked), and the DPO loss and reward
  margin after the step.

Also reports where the master weights sit on the bf16 grid (exactly on it, exactly halfway).
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxevo.train.batches import tokenize_views
from jaxevo.train.objectives import get_objective
from jaxevo.train.precision import AS_STORED, compute_copy, copy_leaf, rounding_key, rounds
from jaxevo.train.step import forward_views
from jaxevo.weights.load import load_pretrained

MODEL = "smollm2-135m-instruct"
BETA = 0.1
EPS = 1e-8  # AdamW's epsilon (OptimSection.eps)


def arithmetic_pairs(n: int = 8) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(n):
        a, b = (int(x) for x in rng.integers(10, 99, 2))
        wrong = a + b + int(rng.choice([-10, -1, 1, 10]))
        rows.append({"prompt": f"What is {a} + {b}? Answer with the number.",
                     "chosen": f"{a} + {b} = {a + b}. The answer is {a + b}.",
                     "rejected": f"{a} + {b} = {wrong}. The answer is {wrong}."})
    return rows


def grid_positions(params) -> dict:
    """Fractions of the rounded (non-scale) fp32 weights exactly on / halfway between bf16 values."""
    on = tie = total = 0
    for path, x in jax.tree_util.tree_leaves_with_path(params):
        if str(getattr(path[-1], "key", path[-1])) in AS_STORED:
            continue
        low = np.asarray(x, np.float32).view(np.uint32) & 0xFFFF
        on += int((low == 0).sum())
        tie += int((low == 0x8000).sum())
        total += low.size
    return {"on_grid": on / total, "halfway": tie / total, "weights": total}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lrs", type=float, nargs="+", default=[1e-7, 1e-6, 1e-5, 1e-4])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    t_start = time.time()

    pre = load_pretrained(MODEL, dtype="float32", param_dtype="float32")
    w0, tok = pre.params, pre.tokenizer
    obj = get_objective("preference")
    data = tokenize_views(arithmetic_pairs(), obj.views, tok, max_length=128, chat_template=True,
                          pad_to_multiple=16)
    views = data.take(np.arange(data.num_examples), 16).views
    names = obj.view_names
    arms = {"float32": ("float32", "nearest", False), "bf16 nearest": ("bfloat16", "nearest", False),
            "bf16 stochastic (fixed bits)": ("bfloat16", "stochastic", False),
            "bf16 stochastic (fresh bits)": ("bfloat16", "stochastic", True)}
    report = {"grid": grid_positions(w0), "pairs": len(arithmetic_pairs()), "lrs": args.lrs, "arms": {}}
    print("master weights on the bf16 grid:", report["grid"])

    for arm, (dtype, rounding, fresh) in arms.items():
        cfg = pre.cfg.replace(dtype=dtype)
        k0 = rounding_key(0)
        k1 = jax.random.fold_in(k0, 1) if fresh else k0

        @jax.jit
        def logps(p, key):
            out = forward_views(compute_copy(p, rounding, dtype, key), cfg, views, names, chunk=64)
            return {v: out[v][2] for v in names}

        ref = logps(w0, k0)

        def dpo(p, key):
            lp = logps(p, key)
            z = BETA * ((lp["chosen"] - ref["chosen"]) - (lp["rejected"] - ref["rejected"]))
            return jnp.mean(-jax.nn.log_sigmoid(z)), jnp.mean(z)

        def loss_at(p, key):
            out = forward_views(compute_copy(p, rounding, dtype, key), cfg, views, names, chunk=64)
            z = BETA * ((out["chosen"][2] - ref["chosen"]) - (out["rejected"][2] - ref["rejected"]))
            return jnp.mean(-jax.nn.log_sigmoid(z))

        # Weights go in as arguments: closed over, XLA would constant-fold 0.5 GB of them.
        loss0, margin0 = (float(x) for x in jax.jit(dpo)(w0, k0))
        g = jax.jit(jax.grad(loss_at))(w0, k0)
        # AdamW's first update at lr 1, without its 1 GB of moments: clip to norm 1, then
        # m_hat / (sqrt(v_hat) + eps) = g / (|g| + eps).
        scale = jnp.minimum(1.0, 1.0 / optax.tree.norm(g))
        unit = jax.tree.map(lambda x: -(x * scale) / (jnp.abs(x * scale) + EPS), g)
        del g
        flat = jax.tree_util.tree_flatten_with_path(w0)[0]
        units = jax.tree.leaves(unit)

        @functools.partial(jax.jit, static_argnums=(3, 4))
        def leaf_stats(lr, w, un, index, rounded):
            """Sums over one leaf: changed entries, |d|^2, <d, u>, <u, u> (d: the copy's move)."""
            u = lr * un
            w1 = w + u
            if rounded and rounding == "stochastic" and dtype == "bfloat16":
                c0, c1 = copy_leaf(w, index, k0), copy_leaf(w1, index, k1)
            else:
                c0, c1 = w, w1
            d = c1.astype(dtype).astype(jnp.float32) - c0.astype(dtype).astype(jnp.float32)
            return jnp.stack([jnp.sum(d != 0).astype(jnp.float32), jnp.vdot(d, d), jnp.vdot(d, u),
                              jnp.vdot(u, u)])

        dpo_j = jax.jit(dpo)
        step_to = jax.jit(lambda lr, w, un: jax.tree.map(lambda a, b: a + lr * b, w, un))

        def measure(lr):
            s = sum(leaf_stats(lr, w, un, i, rounds(path, w))
                    for i, ((path, w), un) in enumerate(zip(flat, units)))
            loss1, margin1 = dpo_j(step_to(lr, w0, unit), k1)
            return {"changed": s[0] / sum(w.size for _, w in flat), "norm_ratio": jnp.sqrt(s[1] / s[3]),
                    "along": s[2] / s[3], "loss": loss1, "margin": margin1}

        rows = {}
        for lr in args.lrs:
            m = {k: float(v) for k, v in measure(jnp.float32(lr)).items()}
            rows[f"{lr:g}"] = m
            print(f"{arm:30s} lr {lr:7.0e}  changed {m['changed']:.4f}  |d|/|u| {m['norm_ratio']:8.2f}  "
                  f"along {m['along']:7.3f}  loss {m['loss']:.4f}  margin {m['margin']:+.4f}", flush=True)
        report["arms"][arm] = {"step0": {"loss": loss0, "margin": margin0}, "after_one_step": rows}
    report["wall_s"] = round(time.time() - t_start, 1)
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
