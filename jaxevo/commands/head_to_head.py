"""`jaxevo eval --model M --data instructions.jsonl (--judge J | --reward-model DIR)
(--baseline B | --baseline-outputs FILE)`: open-ended answers against a baseline's.

Not a command of its own: `jaxevo eval` hands over here when --judge or --reward-model is given.
Each instruction is answered by M (greedy, chat template) and by B (or read from an AlpacaEval
outputs file); the judge compares each pair in both orders (a win only when both agree, else a
tie), or the reward model scores both. Reported: the win rate with ties as half, its 95%
bootstrap interval over prompts, AlpacaEval's length-controlled win rate and the mean lengths
(`jaxevo.judging.winrate`). Written under --out: both outputs files (AlpacaEval format), the
per-prompt comparisons and summary.json.
"""

from __future__ import annotations

import gc
import json
import math
from pathlib import Path

from jaxevo.data.loaders import read_jsonl_rows
from jaxevo.dirlock import DirLock
from jaxevo.errors import ConfigError
from jaxevo.outputs import check_writable


def instructions_of(path: str, limit: int) -> list[str]:
    """The `instruction` (or `prompt`) of each JSONL line, the first `limit`; errors name the line."""
    out = []
    for lineno, row in read_jsonl_rows(path)[:limit]:
        text = row.get("instruction", row.get("prompt"))
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"{path} line {lineno}: needs a non-empty 'instruction' (or 'prompt')")
        out.append(text)
    if not out:
        raise ConfigError(f"{path} has no instructions")
    return out


def run(args) -> int:
    if not args.data:
        raise ConfigError("--judge / --reward-model compare answers to open-ended instructions: "
                          "give --data FILE.jsonl of {\"instruction\": ...}")
    if bool(args.baseline) == bool(args.baseline_outputs):
        raise ConfigError("give exactly one of --baseline MODEL and --baseline-outputs FILE")
    instructions = instructions_of(args.data, args.limit)
    baseline_rows = None
    if args.baseline_outputs:  # read (and checked) before any model loads
        from jaxevo.judging.alpaca import read_outputs
        baseline_rows = read_outputs(args.baseline_outputs)
    out = check_writable(args.out or f"eval-{Path(args.data).stem}-vs-baseline", is_dir=True)
    with DirLock(out, "jaxevo eval"):
        return _compare(args, instructions, baseline_rows, out)


def _compare(args, instructions: list[str], baseline_rows, out: Path) -> int:
    # Here: they import jax, which argument and data errors above never need.
    from jaxevo.judging.alpaca import write_outputs
    from jaxevo.judging.head_to_head import generate_outputs, judge_head_to_head, reward_head_to_head
    from jaxevo.sampling.api import Sampler

    def answers(model: str) -> list[dict]:
        sampler = Sampler.load(model, dtype=args.dtype)
        rows = generate_outputs(sampler, instructions, model, max_new_tokens=args.max_new_tokens,
                                seed=args.seed, progress=True)
        del sampler
        gc.collect()  # one model in memory at a time
        return rows

    model_rows = answers(args.model)
    baseline_rows = baseline_rows if baseline_rows is not None else answers(args.baseline)
    if args.reward_model:
        from jaxevo.judging.reward_model import RewardModel
        rows, report = reward_head_to_head(RewardModel.load(args.reward_model, dtype=args.dtype),
                                           model_rows, baseline_rows, seed=args.seed)
    else:
        from jaxevo.judging.judge import Judge, JudgeSettings
        judge = Judge.load(args.judge, JudgeSettings(max_new_tokens=args.judge_max_new_tokens),
                           dtype=args.dtype, progress=True)
        rows, report = judge_head_to_head(judge, model_rows, baseline_rows, seed=args.seed)
    report.update(model=args.model, baseline=args.baseline or args.baseline_outputs,
                  judge=args.judge, reward_model=args.reward_model, data=args.data)
    write_outputs(out / "model_outputs.json", model_rows)
    write_outputs(out / "baseline_outputs.json", baseline_rows)
    with open(out / "comparisons.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    # Undefined figures (no comparison judged) are null, not NaN, which is not JSON.
    clean = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in report.items()}
    (out / "summary.json").write_text(json.dumps(clean, indent=2))
    total = report["n_total"] + report["n_unjudged"]
    if report["n_total"] == 0:
        line = (f"no win rate: the judge gave a verdict on none of {total} comparisons (its texts are in "
                f"comparisons.jsonl); mean length {report['avg_length']:.0f} vs "
                f"{report['avg_length_baseline']:.0f} characters")
    else:
        line = (f"win rate {report['win_rate']:.1f}% (95% CI {report['ci_low']:.1f}-{report['ci_high']:.1f}), "
                f"length-controlled {report['length_controlled_winrate']:.1f}%, judged {report['n_total']} "
                f"of {total}, mean length {report['avg_length']:.0f} vs "
                f"{report['avg_length_baseline']:.0f} characters")
    if args.reward_model:
        line += f"; mean reward {report['mean_reward']:.4g} vs {report['mean_reward_baseline']:.4g}"
    print(line)
    print(f"wrote {out}/summary.json, comparisons.jsonl and both outputs files")
    return 0
