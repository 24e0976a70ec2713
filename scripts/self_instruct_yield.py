"""How many usable new questions a model writes with SELF's Self-Instruct step, and why the others
are dropped: the prompts stage's request, parser and filters (evolve/self_instruct.py) on a
recipe's prompt pool, without a run directory.

    python scripts/self_instruct_yield.py --config configs/self.yaml --requests 32 [key=value ...]

Prints one JSON line: requests, candidates, kept per threshold, the reasons, a few kept questions.
"""

from __future__ import annotations

import argparse
import collections
import json
import random

from jaxevo.config import load_config
from jaxevo.data import load_source
from jaxevo.evolve import self_instruct as si
from jaxevo.evolve.config import EvolveConfig
from jaxevo.sampling.api import Sampler, SamplingParams


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/self.yaml")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--thresholds", default="0.7,0.9")
    ap.add_argument("--template", action="append", default=[],
                    help="a request template ({examples}, {next}) to try instead of the config's; repeatable")
    ap.add_argument("--show", type=int, default=0, help="print this many raw completions per template")
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    cfg = load_config(EvolveConfig, a.config, a.overrides)
    s = cfg.prompts.self_instruct
    pool = [dict(r) for r in load_source(cfg.prompts.source)]
    pool_q = [si.question_of(r) for r in pool]
    held_out = {si.normal(si.question_of(r)) for spec in (cfg.eval.source, cfg.rounds.gate) if spec
                for r in load_source(spec)}
    shape = si.Shape.of(pool_q) if s.pool_shape else si.Shape()
    rng = random.Random(a.seed)
    seeds = [si.draw_seeds(pool_q, [], s.seeds, 0, rng) for _ in range(a.requests)]
    sampler = Sampler.load(cfg.model.path, dtype=cfg.model.sample_dtype, max_batch=cfg.sample.batch_size)
    report = []
    for template in a.template or [s.template]:
        comps = sampler.generate([si.request(template, x) for x in seeds],
                                 SamplingParams(max_new_tokens=s.max_new_tokens, temperature=s.temperature,
                                                top_p=cfg.sample.top_p, seed=a.seed),
                                 chat=cfg.prompts.chat, progress=False)
        cands = [(q, x) for x, cs in zip(seeds, comps)
                 for q in si.parse_continuation(cs[0].text, cs[0].finish_reason == "length")]
        out = {"template": template, "requests": a.requests, "candidates": len(cands),
               "cut_off": sum(cs[0].finish_reason == "length" for cs in comps),
               "raw": [cs[0].text for cs in comps[:a.show]]}
        for thr in (float(t) for t in a.thresholds.split(",")):
            f = si.Filtered()
            index = si.RougeIndex(thr, pool_q)
            for q, x in cands:
                f.offer(q, index, x, s, held_out, shape)
            out[f"max_rouge={thr}"] = {"kept": len(f.kept), "reasons": dict(collections.Counter(f.reasons)),
                                       "examples": f.kept[:8]}
        report.append(out)
    out = {"model": cfg.model.path, "results": report}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
