"""What a small LLM judge can tell: the embedded model judges its own greedy answers against its
own sampled answers (temperature 0.7) on built-in instructions, pairwise in both orders, and then
judges identical answers (any win there is noise or position bias).

    PYTHONPATH=. python scripts/judge_selfcheck.py --n 40 --out /tmp/judge_selfcheck

Prints the two win-rate reports (`judging.winrate.win_rate_report`) and the wall times; writes the
AlpacaEval-format outputs and the per-prompt verdicts into --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from jaxevo.data.instructions import generate_instructions
from jaxevo.judging.alpaca import write_outputs
from jaxevo.judging.head_to_head import generate_outputs, judge_head_to_head
from jaxevo.judging.judge import Judge, JudgeSettings
from jaxevo.sampling.api import Sampler


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--judge-tokens", type=int, default=64)
    ap.add_argument("--out", default="/tmp/judge_selfcheck")
    ap.add_argument("--max-batch", type=int, default=16)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    prompts = [r["prompt"] for r in generate_instructions(a.n, split="test", seed=0)]
    t0 = time.perf_counter()
    sampler = Sampler.load(a.model, max_batch=a.max_batch)
    greedy = generate_outputs(sampler, prompts, "greedy", max_new_tokens=a.max_new_tokens)
    sampled = generate_outputs(sampler, prompts, "t0.7", max_new_tokens=a.max_new_tokens, temperature=0.7, seed=1)
    write_outputs(out / "greedy.json", greedy)
    write_outputs(out / "sampled.json", sampled)
    t1 = time.perf_counter()
    print(f"answers: {t1 - t0:.1f} s", flush=True)
    judge = Judge(sampler, JudgeSettings(max_new_tokens=a.judge_tokens))
    rows, report = judge_head_to_head(judge, greedy, sampled)
    t2 = time.perf_counter()
    (out / "verdicts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(json.dumps({"greedy_vs_sampled": report, "seconds": round(t2 - t1, 1)}, indent=2), flush=True)
    same_rows, same = judge_head_to_head(judge, greedy, greedy)
    t3 = time.perf_counter()
    (out / "verdicts_identical.jsonl").write_text("".join(json.dumps(r) + "\n" for r in same_rows))
    print(json.dumps({"identical_answers": same, "seconds": round(t3 - t2, 1)}, indent=2), flush=True)


if __name__ == "__main__":
    main()
