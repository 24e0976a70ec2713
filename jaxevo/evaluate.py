"""Verifiable evaluation: accuracy of a model on items {prompt, answer}, with a 95% interval.

Greedy by default; sampled with k > 1 gives pass@k and majority@k. Optional *online
self-refinement* (SELF / EVOLVE inference): answer -> the model's own refinement of it, reported
beside the plain answer. Only strict-format answers count (`jaxevo.data.answers.extract_answer`).
"""

from __future__ import annotations

import collections
import math
from typing import Any, Sequence

from jaxevo.data.answers import answers_match, check_probe, extract_answer, follows_format
from jaxevo.data.records import chat_of
from jaxevo.sampling.api import SamplingParams
from jaxevo.templates import REFINE_TEMPLATE


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (sane at 0% and 100%)."""
    if n == 0:
        return 0.0, 0.0
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def accuracy_summary(correct: Sequence[bool]) -> dict[str, float]:
    k, n = sum(map(bool, correct)), len(correct)
    lo, hi = wilson(k, n)
    return {"accuracy": k / n if n else 0.0, "ci95_low": lo, "ci95_high": hi, "correct": k, "n": n}


def is_correct(item: dict[str, Any], text: str) -> bool:
    """Memory probes ("What is my cat called?") are checked as facts, everything else as a number."""
    if item.get("kind") == "probe":
        return check_probe(text, str(item["answer"]), item.get("distractors") or ())
    return answers_match(extract_answer(text), item["answer"])


def evaluate(sampler, items: Sequence[dict[str, Any]], *, max_new_tokens: int = 192,
             k: int = 1, temperature: float = 0.0, seed: int = 0, chat: bool = True,
             self_refine: bool = False, refine_template: str = REFINE_TEMPLATE,
             progress: bool | None = None) -> tuple[list[dict], dict[str, Any]]:
    """Run the model on `items` (dicts with "prompt" and "answer"); returns (per-item rows, summary).

    k > 1 needs temperature > 0: the summary then has pass@k and majority@k beside accuracy
    (accuracy = the first sample). With `self_refine`, each first answer is refined once by the
    model (greedy) and `refined/accuracy` is reported too.
    """
    if k > 1 and temperature == 0:
        temperature = 1.0  # k identical greedy samples would make pass@k meaningless
    prompts = [chat_of(it) for it in items]  # chat messages / a system turn where the item has them
    sp = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, n=k, seed=seed)
    outs = sampler.generate(prompts, sp, chat=chat, progress=progress)
    rows = []
    for it, comps in zip(items, outs):
        preds = [extract_answer(c.text) for c in comps]
        ok = [is_correct(it, c.text) for c in comps]
        votes = collections.Counter(p for p in preds if p is not None)
        majority = votes.most_common(1)[0][0] if votes else None
        rows.append({"id": it.get("id"), "prompt": it["prompt"], "answer": it["answer"],
                     "completion": comps[0].text, "prediction": preds[0], "correct": ok[0],
                     "formatted": follows_format(comps[0].text, it),
                     "finish": comps[0].finish_reason, "pass": any(ok),
                     "majority": majority, "majority_correct": answers_match(majority, it["answer"])})
    summary: dict[str, Any] = accuracy_summary([r["correct"] for r in rows])
    summary["formatted"] = sum(r["formatted"] for r in rows) / max(1, len(rows))
    kinds = [str(it.get("kind", "item")) for it in items]
    if len(set(kinds)) > 1:  # e.g. dialogue turns: arithmetic questions and memory probes apart
        summary["by_kind"] = {kd: accuracy_summary([r["correct"] for r, k2 in zip(rows, kinds) if k2 == kd])
                              for kd in sorted(set(kinds))}
    if k > 1:
        summary[f"pass@{k}"] = accuracy_summary([r["pass"] for r in rows])["accuracy"]
        summary[f"majority@{k}"] = accuracy_summary([r["majority_correct"] for r in rows])["accuracy"]
    if self_refine:
        refine_prompts = [refine_template.format(prompt=r["prompt"], previous=r["completion"]) for r in rows]
        refined = sampler.generate(refine_prompts, SamplingParams(max_new_tokens=max_new_tokens,
                                                                  temperature=0.0), chat=chat,
                                   progress=progress)
        for it, r, comps in zip(items, rows, refined):
            r["refined"] = comps[0].text
            r["refined_prediction"] = extract_answer(comps[0].text)
            r["refined_correct"] = is_correct(it, comps[0].text)
        ref = accuracy_summary([r["refined_correct"] for r in rows])
        summary.update({f"refined/{key}": v for key, v in ref.items()})
    return rows, summary
