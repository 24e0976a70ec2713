"""Why the sampler decodes merged weights: a forward with factorised adapters vs the plain model.

    python benchmarks/lora_forward.py [--rows 64] [--tokens 1 96] [--rank 16] [--repeats 7]

* Model: SmolLM2-135M-Instruct, bf16 weights and compute (the sampler's dtype).
* "merged": the plain model (what a merged export is: same shapes, same program as any model).
  "factorised": the same weights plus rank-``--rank`` adapters on all 7 projections, applied
  ``x·W + s·(x·A)·B`` inside the layers (`jaxevo.models.lowrank`), random non-zero B.
* One jitted forward of ``--rows`` rows x each ``--tokens`` length (1 = a decode step's
  projections, without a KV cache; 96 = a prompt's prefill), the two arms alternated
  ``--repeats`` times after one compile call each; the median is reported. Both arms run in
  this one process, so load on the machine hits them alike.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxevo.lora import LoraSection, init_adapters
from jaxevo.lora.quantize import model_variables
from jaxevo.models.lowrank import LoraSpec
from jaxevo.models.transformer import Transformer, causal_mask, positions_from_valid
from jaxevo.weights.load import load_pretrained


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--tokens", type=int, nargs="+", default=[1, 96])
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    pre = load_pretrained("smollm2-135m-instruct", dtype="bfloat16", param_dtype="bfloat16")
    cfg, params = pre.cfg, pre.params
    lcfg = LoraSection(rank=args.rank, alpha=2.0 * args.rank)
    ad = init_adapters(lcfg, cfg, jax.random.key(0))
    ad = jax.tree.map(lambda x: x + 0.01, ad)  # non-zero B: the branch does real work
    plain = jax.jit(lambda p, t, pos, m: Transformer(cfg).apply({"params": p}, t, pos, m)[0])
    fact = jax.jit(lambda p, a, t, pos, m: Transformer(cfg, LoraSpec(lcfg.scale, 0.0)).apply(
        model_variables(p, a), t, pos, m)[0])
    report = {"rows": args.rows, "rank": args.rank, "load_avg": list(__import__("os").getloadavg())}
    for t in args.tokens:
        toks = jnp.asarray(np.random.RandomState(0).randint(0, cfg.vocab_size, (args.rows, t)), jnp.int32)
        valid = jnp.ones(toks.shape, jnp.int32)
        pos, mask = positions_from_valid(valid), causal_mask(valid)
        arms = {"merged": lambda: plain(params, toks, pos, mask),
                "factorised": lambda: fact(params, ad, toks, pos, mask)}
        times = {k: [] for k in arms}
        for f in arms.values():
            jax.block_until_ready(f())  # compile
        for _ in range(args.repeats):
            for k, f in arms.items():
                t0 = time.perf_counter()
                jax.block_until_ready(f())
                times[k].append(time.perf_counter() - t0)
        med = {k: float(np.median(v)) for k, v in times.items()}
        report[f"tokens_{t}"] = {"median_s": med, "factorised_over_merged": med["factorised"] / med["merged"]}
        print(f"{args.rows} rows x {t} tokens: merged {med['merged'] * 1e3:.1f} ms, factorised "
              f"{med['factorised'] * 1e3:.1f} ms ({med['factorised'] / med['merged']:.2f}x)")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
