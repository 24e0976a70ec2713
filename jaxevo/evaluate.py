"""Verifiable evaluation: accuracy of a model on items {prompt, answer}, with a 95% interval.

Greedy by default; sampled with k > 1 gives pass@k and majority@k. Optional *online
self-refinement* (SELF / EVOLVE inference): answer -> the model's own refinement of it, reported
beside the plain answer. Each item is checked by its answer checker (`jaxevo.checkers`: the
record's ``checker``, default ``number``; `evaluate(checker=...)` overrides it for all items):
correct means a score of 1, and only answers in the checker's strict format count.
"""

from __future__ import annotations

import collections
from typing import Any, Sequence

from jaxevo.checkers import Checker, checker_for, get_checker
from jaxevo.data.records import chat_of
from jaxevo.sampling.api import SamplingParams
from jaxevo.strategies import Chain, Strategy, run_strategy
from jaxevo.stats import wilson
from jaxevo.templates import REFINE_TEMPLATE


def accuracy_summary(correct: Sequence[bool]) -> dict[str, float]:
    k, n = sum(map(bool, correct)), len(correct)
    lo, hi = wilson(k, n)
    return {"accuracy": k / n if n else 0.0, "ci95_low": lo, "ci95_high": hi, "correct": k, "n": n}


def is_correct(item: dict[str, Any], text: str, checker: Checker | None = None) -> bool:
    """Does `text` score 1 under the item's checker (or `checker`)? Memory probes ("What is my cat
    called?") are checked as facts by default, everything else as a number."""
    score = (checker or checker_for(item)).check(text, item)
    return score is not None and score >= 1.0


def evaluate(sampler, items: Sequence[dict[str, Any]], *, max_new_tokens: int = 192,
             k: int = 1, temperature: float = 0.0, seed: int = 0, chat: bool = True,
             self_refine: bool = False, refine_template: str = REFINE_TEMPLATE,
             progress: bool | None = None, checker: str | None = None,
             stop_after: Sequence[str] = (), strategy: Strategy | None = None, reward_model=None,
             judge=None) -> tuple[list[dict], dict[str, Any]]:
    """Run the model on `items` (dicts with "prompt" and what their checker reads, e.g.
    "answer"); returns (per-item rows, summary).

    k > 1 needs temperature > 0: the summary then has pass@k and majority@k beside accuracy
    (accuracy = the first sample). With `self_refine`, each first answer is refined once by the
    model (greedy) and `refined/accuracy` is reported too. `checker` names one checker for every
    item instead of each item's own. `stop_after`: end-of-answer patterns that end a completion
    early (`SamplingParams.stop_after`). `strategy` (`jaxevo.strategies`): a chain of K
    self-refinement steps (optionally with self-feedback) and/or best-of-N selection (by
    `reward_model` or `judge` where it says so), reported under ``summary["strategy"]``.
    """
    override = get_checker(checker) if checker is not None else None
    if k > 1 and temperature == 0:
        temperature = 1.0  # k identical greedy samples would make pass@k meaningless
    prompts = [chat_of(it) for it in items]  # chat messages / a system turn where the item has them
    best_of = strategy.best_of if strategy is not None else 1
    if best_of > 1 and temperature == 0:
        temperature = 1.0  # as for k: N identical greedy samples leave nothing to select from
    sp = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, n=max(k, best_of), seed=seed,
                        stop_after=tuple(stop_after))
    outs = sampler.generate(prompts, sp, chat=chat, progress=progress)
    rows = []
    checkers = [override or checker_for(it) for it in items]
    for it, ch, comps in zip(items, checkers, outs):
        preds = [ch.extract(c.text, it) for c in comps]
        ok = [is_correct(it, c.text, ch) for c in comps]
        votes = collections.Counter(p for p in preds if p is not None)
        majority = votes.most_common(1)[0][0] if votes else None
        # The majority answer is right when a completion stating it is (one stated answer, one check).
        majority_correct = next((o for p, o in zip(preds, ok) if p == majority), False) if majority is not None else False
        rows.append({"id": it.get("id"), "prompt": it["prompt"], "answer": it.get("answer"),
                     "completion": comps[0].text, "prediction": preds[0], "correct": ok[0],
                     "formatted": ch.well_formatted(comps[0].text, it),
                     "finish": comps[0].finish_reason, "pass": any(ok),
                     "majority": majority, "majority_correct": majority_correct})
    summary: dict[str, Any] = accuracy_summary([r["correct"] for r in rows])
    summary["formatted"] = sum(r["formatted"] for r in rows) / max(1, len(rows))
    names = sorted({ch.name for ch in checkers})
    summary["checker"] = names[0] if len(names) == 1 else names
    if len(names) > 1:  # e.g. a mixture of data sets: each checker's items apart
        summary["by_checker"] = {n: accuracy_summary([r["correct"] for r, ch in zip(rows, checkers) if ch.name == n])
                                 for n in names}
    kinds = [str(it.get("kind", "item")) for it in items]
    if len(set(kinds)) > 1:  # e.g. dialogue turns: arithmetic questions and memory probes apart
        summary["by_kind"] = {kd: accuracy_summary([r["correct"] for r, k2 in zip(rows, kinds) if k2 == kd])
                              for kd in sorted(set(kinds))}
    if k > 1:
        summary[f"pass@{k}"] = accuracy_summary([r["pass"] for r in rows])["accuracy"]
        summary[f"majority@{k}"] = accuracy_summary([r["majority_correct"] for r in rows])["accuracy"]
    if self_refine:
        refine_prompts = [refine_template.format(prompt=r["prompt"], previous=r["completion"]) for r in rows]
        refined = sampler.generate(refine_prompts, SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0,
                                                                  stop_after=tuple(stop_after)), chat=chat,
                                   progress=progress)
        for it, ch, r, comps in zip(items, checkers, rows, refined):
            r["refined"] = comps[0].text
            r["refined_prediction"] = ch.extract(comps[0].text, it)
            r["refined_correct"] = is_correct(it, comps[0].text, ch)
        ref = accuracy_summary([r["refined_correct"] for r in rows])
        summary.update({f"refined/{key}": v for key, v in ref.items()})
    if strategy is not None and strategy.active:
        chains, chosen = run_strategy(sampler, prompts, items, outs, strategy, checkers,
                                      max_new_tokens=max_new_tokens, chat=chat, stop_after=stop_after,
                                      progress=progress, reward_model=reward_model, judge=judge)
        summary["strategy"] = strategy_report(items, checkers, rows, chains, chosen, strategy)
    return rows, summary


def strategy_report(items, checkers, rows: list[dict], chains: list[list[Chain]], chosen: list[int],
                    strategy: Strategy) -> dict[str, Any]:
    """Adds each row's chains and final answer (``strategy``) to `rows`; returns the summary:
    accuracy after each step of the chain (over every sample's chain; a stopped chain keeps its
    accepted answer), at which step the self-feedback accepted, and the selected answers'
    accuracy (``final``), with best-of-N's pass@N of the final answers."""
    k = strategy.refine_steps
    by_step: list[list[bool]] = [[] for _ in range(k + 1)]
    stopped = collections.Counter()
    finals, passes = [], []
    for it, ch, row, row_chains, j in zip(items, checkers, rows, chains, chosen):
        for c in row_chains:
            for step in range(k + 1):
                by_step[step].append(is_correct(it, c.at(step), ch))
            stopped["never" if c.stopped is None else str(c.stopped)] += 1
        final = row_chains[j].final
        ok = is_correct(it, final, ch)
        finals.append(ok)
        passes.append(any(is_correct(it, c.final, ch) for c in row_chains))
        row["strategy"] = {"chains": [c.as_dict() for c in row_chains], "selected": j, "final": final,
                           "final_prediction": ch.extract(final, it), "final_correct": ok}
    report: dict[str, Any] = {
        "refine_steps": k, "self_feedback": strategy.self_feedback, "best_of": strategy.best_of,
        "selection": strategy.select if strategy.best_of > 1 else None,
        "accuracy_by_step": [accuracy_summary(v)["accuracy"] for v in by_step],
        "chains": len(by_step[0]), "final": accuracy_summary(finals)}
    if strategy.self_feedback:  # how many chains the critique accepted at answer k (never: refined K times)
        report["stopped_at"] = {key: stopped[key] for key in sorted(stopped, key=lambda x: (x == "never", x))}
    if strategy.best_of > 1:
        report[f"pass@{strategy.best_of}"] = accuracy_summary(passes)["accuracy"]
    return report
