"""`jaxevo score --data completions.jsonl (--checker NAME | --reward module:fn ... | --reward-model DIR)
--out scored.jsonl`.

Scores completions made anywhere, in `jaxevo generate`'s output format: each line holds "prompt"
(or chat "messages"), "completions" (strings) and the record's other fields (the answer a checker
compares with, the columns a reward function reads). Each output line keeps the input fields and
adds "scores", one number per completion (null where no reward function had an opinion); with
several --reward, also "reward_scores" per function. A summary (records, completions, mean score,
each reward's mean, a checker's accuracy and format rate) is printed and written beside the
output as `<out stem>.summary.json`. Every line is checked before anything is written; the output
is written to a temporary file and renamed at the end. With a checker or reward functions no model
is loaded (no jax, no torch); --reward-model DIR scores each (prompt, completion) conversation with
a `*ForSequenceClassification` checkpoint (`jaxevo.judging.RewardModel`, bf16 by default; --dtype
float32 gives scores equal to transformers' in f32).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from jaxevo.errors import ConfigError


def add_arguments(p):
    p.add_argument("--data", required=True, help="JSONL of {prompt, completions, ...} (jaxevo generate's output)")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--checker", help="an answer checker by name (e.g. number) or module:attribute")
    how.add_argument("--reward", action="append", metavar="MODULE:FN[=WEIGHT]",
                     help="a TRL-style reward function fn(prompts, completions, **columns) (repeatable; "
                          "several are summed with their weights, default 1)")
    how.add_argument("--reward-model", metavar="DIR",
                     help="a reward model (*ForSequenceClassification directory): one reward per completion")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"),
                   help="the reward model's dtype (float32: exact scores)")
    p.add_argument("--out", required=True, help="output JSONL (the summary goes beside it)")


def parse_reward_flags(flags: list[str]) -> list[dict]:
    """`module:fn` or `module:fn=0.5` flags as `score.rewards` entries."""
    out = []
    for f in flags:
        name, eq, weight = f.rpartition("=") if "=" in f else (f, "", "")
        out.append({"fn": name, "weight": weight} if eq else {"fn": f})
    return out


def summary_path(out: Path) -> Path:
    """scored.jsonl -> scored.summary.json (beside the output)."""
    return out.with_name(out.stem + ".summary.json")


def run(args) -> int:
    from jaxevo.checkers import get_checker
    from jaxevo.data.loaders import read_jsonl_rows
    from jaxevo.rewards import parse_rewards
    from jaxevo.scoring import score_rows

    t0 = time.perf_counter()
    checker = get_checker(args.checker) if args.checker else None
    rewards = parse_rewards(parse_reward_flags(args.reward), "--reward") if args.reward else ()
    numbered = read_jsonl_rows(args.data)
    if not numbered:
        raise ConfigError(f"{args.data} has no records")
    if args.reward_model:
        rows, summary = _score_with_reward_model(args, [r for _, r in numbered])
    else:
        rows, summary = score_rows([r for _, r in numbered], checker=checker, rewards=rewards,
                                   where=lambda i: f"{args.data} line {numbered[i][0]}")
    summary.update(data=str(args.data), seconds=round(time.perf_counter() - t0, 3))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, out)
    summary_path(out).write_text(json.dumps(summary, indent=2) + "\n")
    line = (f"jaxevo score: {summary['records']} records, {summary['completions']} completions, "
            f"mean score {_fmt(summary['mean'])}")
    if checker is not None:
        line += f", accuracy {summary['accuracy']:.1%}, formatted {summary['format_rate']:.1%}"
    for name, r in summary.get("rewards", {}).items():
        line += f"; {name} (weight {r['weight']:g}) mean {_fmt(r['mean'])}"
    print(line + f" ({summary['seconds']:.2f}s) -> {out}, {summary_path(out)}")
    return 0


def _score_with_reward_model(args, records: list[dict]) -> tuple[list[dict], dict]:
    """Rows with `scores` from the reward model, and the summary's counts and mean."""
    # Here: it imports jax, which the checker and reward paths never need.
    from jaxevo.judging.reward_model import RewardModel, score_records

    rows = score_records(RewardModel.load(args.reward_model, dtype=args.dtype), records, where=args.data)
    scores = [s for r in rows for s in r["scores"]]
    return rows, {"records": len(rows), "completions": len(scores), "reward_model": args.reward_model,
                  "dtype": args.dtype, "mean": sum(scores) / len(scores) if scores else None}


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4g}"
