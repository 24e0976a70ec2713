"""`jaxevo eval --model M (--task T | --data FILE.jsonl) [--checker NAME] [--limit N]`: verifiable
accuracy.

Items are {"prompt", "answer"} (or whatever their checker reads: "choices", "test",
"constraints"...); each completion is checked by the item's answer checker (`jaxevo.checkers`: the
record's "checker", default `number`: the first strict-format final number, compared exactly), or
by --checker for every item. Prints accuracy with a 95% Wilson interval and the format rate;
writes per-item `results.jsonl` and `summary.json` under --out.
"""

from __future__ import annotations

import json
from pathlib import Path

from jaxevo.checkers import check_record_fields, checker_for
from jaxevo.commands import positive_int
from jaxevo.commands.score import parse_reward_flags
from jaxevo.data import load_source
from jaxevo.dirlock import DirLock
from jaxevo.errors import ConfigError
from jaxevo.outputs import check_writable

# Built-in tasks: a load_source spec of held-out items (test splits never overlap training).
TASKS = {
    "arithmetic": {"type": "arithmetic", "split": "test", "levels": [1, 2]},
    "arithmetic-hard": {"type": "arithmetic", "split": "test", "levels": [3, 4]},
    # `arithmetic`'s levels in wording no training prompt uses (the held-out templates).
    "arithmetic-unseen": {"type": "arithmetic", "split": "test", "phrasings": "unseen", "levels": [1, 2]},
}


def add_arguments(p):
    p.add_argument("--model", required=True, help="HF directory, .gguf, jaxevo checkpoint, or embedded name")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--task", choices=sorted(TASKS), help="a built-in verifiable task")
    src.add_argument("--data", help="JSONL with {prompt, answer} lines")
    p.add_argument("--checker", help="answer checker for every item (number, math, choice, exact, normalized, "
                                     "regex, constraints, code, probe); default: each item's own, else number")
    p.add_argument("--limit", type=int, default=200, help="evaluate the first N items (default 200)")
    p.add_argument("--max-new-tokens", type=int, default=192)
    p.add_argument("--batch-size", type=positive_int, default=64,
                   help="max rows (item x sample) per batch: the whole set in one batch decodes its steps once")
    p.add_argument("--k", type=int, default=1, help="samples per item (k > 1: pass@k and majority@k)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--self-refine", action="store_true", help="also report one online self-refinement step")
    p.add_argument("--no-chat", action="store_true", help="do not apply the chat template")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--out", help="output directory (default: eval-<task or data name>)")
    p.add_argument("--judge", metavar="J", help="open-ended answers: an LLM judge compares M's answer with "
                                                "the baseline's, both orders (see --baseline)")
    p.add_argument("--reward-model", metavar="DIR", help="open-ended answers: a reward model scores M's "
                                                         "and the baseline's answers")
    p.add_argument("--judge-max-new-tokens", type=int, default=256,
                   help="with --judge: tokens the judge may write before its verdict")
    p.add_argument("--baseline", metavar="B", help="with --judge/--reward-model: the model to compare with")
    p.add_argument("--baseline-outputs", metavar="FILE",
                   help="with --judge/--reward-model: the baseline's answers, an AlpacaEval outputs file")
    p.add_argument("--reward", action="append", metavar="MODULE:FN[=WEIGHT]",
                   help="also report the mean of TRL-style reward functions over the first completions "
                        "(repeatable; see `jaxevo score`)")
    add_strategy_arguments(p)


def add_strategy_arguments(p) -> None:
    """The inference strategies (`jaxevo.strategies`), shared by `jaxevo eval` and `jaxevo generate`."""
    p.add_argument("--refine-steps", type=int, default=0, metavar="K",
                   help="a chain of K self-refinement steps after each answer (EVOLVE's template z; greedy)")
    p.add_argument("--self-feedback", action="store_true",
                   help="with --refine-steps: before each step the model critiques its answer (SELF's "
                        "feedback template); a chain stops when the critique accepts, else the next "
                        "answer is conditioned on the critique")
    p.add_argument("--feedback-max-new-tokens", type=int, default=128,
                   help="with --self-feedback: tokens of each critique")
    p.add_argument("--best-of", type=int, default=1, metavar="N",
                   help="N samples per prompt (temperature 0 becomes 1), each refined as above, one selected")
    p.add_argument("--select", default="majority", choices=["majority", "checker", "reward_model", "judge"],
                   help="with --best-of: majority (self-consistency over the stated answers), checker (the "
                        "first the checker accepts: needs the reference, an upper bound in evaluation), "
                        "reward_model (--reward-model DIR) or judge (--judge J, pointwise grades)")


def strategy_of(args):
    """The `Strategy` the flags ask for (bad combinations are ConfigErrors)."""
    from jaxevo.strategies import Strategy

    if args.select in ("reward_model", "judge") and args.best_of < 2:
        raise ConfigError(f"--select {args.select} chooses among --best-of N samples: give N >= 2")
    if args.select in ("reward_model", "judge") and (getattr(args, "baseline", None) or getattr(args, "baseline_outputs", None)):
        raise ConfigError("--select picks among one model's samples; --baseline compares two models: not both")
    if args.select == "reward_model" and not args.reward_model:
        raise ConfigError("--select reward_model needs --reward-model DIR")
    if args.select == "judge" and not args.judge:
        raise ConfigError("--select judge needs --judge J")
    return Strategy(refine_steps=args.refine_steps, self_feedback=args.self_feedback, best_of=args.best_of,
                    select=args.select, feedback_max_new_tokens=args.feedback_max_new_tokens)


def selectors(args, strategy) -> dict:
    """The reward model or judge that selects among best-of-N samples, loaded."""
    if strategy.best_of < 2 or strategy.select not in ("reward_model", "judge"):
        return {}
    if strategy.select == "reward_model":
        from jaxevo.judging.reward_model import RewardModel
        return {"reward_model": RewardModel.load(args.reward_model, dtype=args.dtype)}
    from jaxevo.judging.judge import Judge, JudgeSettings
    return {"judge": Judge.load(args.judge, JudgeSettings(max_new_tokens=args.judge_max_new_tokens), dtype=args.dtype)}


def run(args) -> int:
    if args.judge and args.reward_model:
        raise ConfigError("give --judge or --reward-model, not both")
    strategy = strategy_of(args)  # before any data or model is read
    if (args.judge or args.reward_model) and args.select not in ("judge", "reward_model"):
        # open-ended answers against a baseline's
        from jaxevo.commands import head_to_head
        return head_to_head.run(args)
    if args.baseline or args.baseline_outputs:
        raise ConfigError("--baseline / --baseline-outputs need --judge J or --reward-model DIR")
    if args.task:
        spec = dict(TASKS[args.task], n=args.limit)
    else:
        spec = {"type": "jsonl", "path": args.data, "limit": args.limit}
    if args.checker:
        spec["checker"] = args.checker  # an unknown name fails here, listing the known ones
    source = load_source(spec)
    items = [dict(r) for r in source][: args.limit]
    for i, it in enumerate(items):  # every field each item's checker reads, before the model loads
        checker = checker_for(it)
        check_record_fields(checker, it, source.where(i))
        if "answer" in checker.needs and it.get("answer") == "":
            raise ConfigError(f"{source.where(i)}: the field 'answer' is empty (checker {checker.name!r} needs it)")
    # Here, not at the top, and after the data are checked: they import jax and transformers,
    # which `jaxevo eval --help` and a data error need neither of (docs/benchmarks.md, CLI start-up).
    from jaxevo.rewards import parse_rewards

    out = check_writable(args.out or f"eval-{args.task or Path(args.data).stem}", is_dir=True)
    rewards = parse_rewards(parse_reward_flags(args.reward), "--reward") if args.reward else ()
    with DirLock(out, "jaxevo eval"):  # a second eval into the same folder is refused
        return _evaluate_into(args, items, rewards, out, strategy)


def _evaluate_into(args, items, rewards, out: Path, strategy=None) -> int:
    """Sample, check and write `out`/results.jsonl and summary.json (the folder is locked)."""
    from jaxevo import cpu_store
    from jaxevo.evaluate import evaluate
    from jaxevo.sampling.api import Sampler
    from jaxevo.scoring import score_rows

    sampler = Sampler.load(args.model, dtype=args.dtype, max_batch=args.batch_size)
    rows, summary = evaluate(sampler, items, max_new_tokens=args.max_new_tokens, k=args.k,
                             temperature=args.temperature, seed=args.seed, chat=not args.no_chat,
                             self_refine=args.self_refine, progress=True, strategy=strategy,
                             **selectors(args, strategy))
    # the CPU paths it ran on (measured once per machine): paths sum in different orders
    summary.update(model=args.model, task=args.task, data=args.data, limit=args.limit,
                   cpu_paths=cpu_store.used_summary())
    if rewards:  # the first completion of each item, as `accuracy` counts it
        scored, rs = score_rows([dict(it, completions=[r["completion"]]) for it, r in zip(items, rows)],
                                rewards=rewards)
        for r, s in zip(rows, scored):
            r["reward"] = s["scores"][0]
        summary.update({"reward/mean": rs["mean"], "reward/scored": rs["scored"], "rewards": rs["rewards"]})
    with open(out / "results.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    line = (f"accuracy {summary['accuracy']:.1%} ({summary['correct']}/{summary['n']}, "
            f"95% CI {summary['ci95_low']:.1%}-{summary['ci95_high']:.1%}), formatted {summary['formatted']:.0%}")
    if args.self_refine:
        line += f"; after self-refinement {summary['refined/accuracy']:.1%}"
    for key in (f"pass@{args.k}", f"majority@{args.k}"):
        if key in summary:
            line += f"; {key} {summary[key]:.1%}"
    if rewards:
        line += f"; mean reward {summary['reward/mean']}"
    if "strategy" in summary:
        line += "; " + strategy_line(summary["strategy"])
    print(line)
    print(f"wrote {out}/results.jsonl and {out}/summary.json")
    return 0


def strategy_line(st: dict) -> str:
    """One line of a strategy's summary (`evaluate.strategy_report`)."""
    parts = []
    if st["refine_steps"]:
        parts.append("by refinement step " + " -> ".join(f"{a:.1%}" for a in st["accuracy_by_step"]))
    if "stopped_at" in st:
        parts.append("feedback accepted at step " + ", ".join(f"{k}: {v}" for k, v in st["stopped_at"].items()))
    if st["best_of"] > 1:
        n = st["best_of"]
        parts.append(f"best-of-{n} by {st['selection']} {st['final']['accuracy']:.1%} "
                     f"(pass@{n} {st[f'pass@{n}']:.1%})")
    else:
        parts.append(f"final {st['final']['accuracy']:.1%}")
    return "; ".join(parts)
