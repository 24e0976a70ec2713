"""A model's answers against a baseline's on the same instructions: what `jaxevo eval --judge J
[--baseline B | --baseline-outputs FILE]` and `--reward-model DIR` report.

    rows = generate_outputs(sampler, instructions, generator="round1")   # AlpacaEval records
    per_prompt, report = judge_head_to_head(judge, rows, baseline_rows)   # LLM judge, both orders
    per_prompt, report = reward_head_to_head(rm, rows, baseline_rows)     # reward model

`report` is `winrate.win_rate_report` (win rate with ties as half, bootstrap interval, LC win rate,
mean lengths); the reward version adds the mean rewards and decides each prompt by the larger
reward (equal rewards: a tie). `per_prompt` holds, for each instruction, both outputs, the
preference and the evidence (the judge's two answers, or the two rewards).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from jaxevo.judging.alpaca import pair_outputs
from jaxevo.judging.judge import Judge
from jaxevo.judging.winrate import win_rate_report
from jaxevo.sampling.api import SamplingParams


def generate_outputs(sampler: Any, instructions: Sequence[str], generator: str, *, max_new_tokens: int = 512,
                     temperature: float = 0.0, seed: int = 0, progress: bool = False) -> list[dict]:
    """AlpacaEval records {"instruction", "output", "generator"}: the model's answer to each
    instruction (chat template applied; greedy by default)."""
    sp = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    outs = sampler.generate(list(instructions), sp, chat=True, progress=progress)
    return [{"instruction": q, "output": o[0].text, "generator": generator} for q, o in zip(instructions, outs)]


def judge_head_to_head(judge: Judge, model_rows: Sequence[dict], baseline_rows: Sequence[dict], *,
                       n_boot: int = 1000, seed: int = 0) -> tuple[list[dict], dict]:
    """The judge compares each model output with the baseline's for the same instruction (both
    orders, one batch). Returns (per-prompt records, the win-rate report)."""
    pairs = pair_outputs(model_rows, baseline_rows)
    comps = judge.compare([m["instruction"] for m, _ in pairs], [m["output"] for m, _ in pairs],
                          [b["output"] for _, b in pairs])
    rows = [{"instruction": m["instruction"], "output": m["output"], "output_baseline": b["output"],
             "generator": m["generator"], "generator_baseline": b["generator"], "preference": c.preference,
             "verdicts": list(c.verdicts), "judge_texts": list(c.texts)} for (m, b), c in zip(pairs, comps)]
    report = win_rate_report([c.preference for c in comps], [m["output"] for m, _ in pairs],
                             [b["output"] for _, b in pairs], n_boot=n_boot, seed=seed)
    return rows, {**report, "judge_both_orders_agree": _agreement(comps)}


def _agreement(comps) -> float:
    """Share of judged prompts where both orders named the same answer (a position-bias check)."""
    judged = [c for c in comps if c.preference is not None]
    return float(np.mean([c.preference != 0.5 or c.verdicts == ("C", "C") for c in judged])) if judged else float("nan")


def reward_head_to_head(rm: Any, model_rows: Sequence[dict], baseline_rows: Sequence[dict], *,
                        n_boot: int = 1000, seed: int = 0) -> tuple[list[dict], dict]:
    """Each output scored by the reward model (`rm.score(prompts, completions)`); a prompt is won
    by the larger reward. Returns (per-prompt records, the win-rate report + mean rewards)."""
    pairs = pair_outputs(model_rows, baseline_rows)
    q = [m["instruction"] for m, _ in pairs]
    mine = rm.score(q, [m["output"] for m, _ in pairs])
    base = rm.score(q, [b["output"] for _, b in pairs])
    prefs = [1.0 if a > b else 0.0 if a < b else 0.5 for a, b in zip(mine, base)]
    rows = [{"instruction": m["instruction"], "output": m["output"], "output_baseline": b["output"],
             "generator": m["generator"], "generator_baseline": b["generator"], "reward": r,
             "reward_baseline": rb, "preference": p} for (m, b), r, rb, p in zip(pairs, mine, base, prefs)]
    report = win_rate_report(prefs, [m["output"] for m, _ in pairs], [b["output"] for _, b in pairs],
                             n_boot=n_boot, seed=seed)
    return rows, {**report, "mean_reward": float(np.mean(mine)) if mine else float("nan"),
                  "mean_reward_baseline": float(np.mean(base)) if base else float("nan")}
