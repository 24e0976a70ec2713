"""The built-in verifiable arithmetic task: seeded word problems with exact integer answers.

Records: ``id``, ``prompt`` (question + answer-format instruction), ``question``, ``answer``
(digits), ``solution`` (worked steps ending "#### N"), ``task`` (sum, difference, product,
quotient, quantities, sharing, money, rates, time, multi_step), ``template``, ``level`` (1-4) and
``topic`` (= task, so DPSE's topic-aware expansion can group them).

``phrasings="unseen"`` draws from the held-out templates of `arithmetic_phrasings` instead (test
split only): the same tasks and arithmetic in wording never used for training.

``levels=[1]`` or ``[1, 2]`` is where a small model's accuracy can still move in a self-evolution
demo (SmolLM2-135M's accuracy per level: docs/results.md, base model).
"""

from __future__ import annotations

import random
from typing import Any, Iterable, Mapping, Sequence

from jaxevo.data.arithmetic_phrasings import UNSEEN_TEMPLATES
from jaxevo.data.arithmetic_templates import TEMPLATES, Template
from jaxevo.data.base import Source, register_source
from jaxevo.data.prompts import DEFAULT_ARITHMETIC_TEMPLATE, format_prompt
from jaxevo.data.records import Record, split_of, stable_hash
from jaxevo.errors import ConfigError

__all__ = ["generate_arithmetic", "arithmetic_source", "TASKS", "LEVELS", "PHRASINGS"]

TASKS = tuple(sorted({t.task for t in TEMPLATES}))
LEVELS = (1, 2, 3, 4)
SPLITS = ("train", "test")
PHRASINGS = ("seen", "unseen")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")


def _templates(levels: Sequence[int], tasks: Iterable[str] | None,
               pool: Sequence[Template] = TEMPLATES) -> dict[int, list[Template]]:
    bad = [lv for lv in levels if lv not in LEVELS]
    if bad or not levels:
        raise ConfigError(f"arithmetic: levels must be a non-empty subset of {LEVELS}, got {list(levels)}")
    task_set = set(TASKS if tasks is None else tasks)
    unknown = sorted(task_set - set(TASKS))
    if unknown:
        raise ConfigError(f"arithmetic: unknown task(s) {unknown}; available: {list(TASKS)}")
    by_level = {lv: [t for t in pool if lv in t.levels and t.task in task_set] for lv in levels}
    empty = [lv for lv, ts in by_level.items() if not ts]
    if empty:
        raise ConfigError(f"arithmetic: no template of task(s) {sorted(task_set)} has level(s) {empty}")
    return by_level


def generate_arithmetic(n: int, *, split: str = "train", seed: int = 0, levels: Sequence[int] = LEVELS,
                        tasks: Iterable[str] | None = None, test_fraction: float = 0.2,
                        prompt_template: str | None = DEFAULT_ARITHMETIC_TEMPLATE,
                        phrasings: str = "seen") -> list[Record]:
    """`n` distinct problems of `split`, deterministic in (seed, split, levels, tasks, phrasings).

    The split of a problem is a hash of its canonical form (template, numbers), independent of the
    seed, so train and test never share a problem. Levels are drawn uniformly, then a template
    uniformly among those of that level. ``prompt_template=None`` uses the bare question.
    ``phrasings="unseen"``: the held-out templates (`arithmetic_phrasings`), test split only; every
    problem of theirs is a test problem (no template of theirs is ever trained on), so
    `test_fraction` does not thin them.
    """
    _check_split(split)
    if phrasings not in PHRASINGS:
        raise ConfigError(f"arithmetic: phrasings must be one of {PHRASINGS}, got {phrasings!r}")
    unseen = phrasings == "unseen"
    if unseen and split != "test":
        raise ConfigError("arithmetic: phrasings=unseen is only for split: test; its templates are held "
                          "out of training so that evaluation measures wording the model never saw "
                          "(train on phrasings: seen)")
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"arithmetic: test_fraction must be in (0, 1), got {test_fraction}")
    by_level = _templates(list(levels), tasks, UNSEEN_TEMPLATES if unseen else TEMPLATES)
    rng = random.Random(int((stable_hash("arithmetic-unseen", seed) if unseen
                             else stable_hash("arithmetic", seed, split))[:16], 16))
    records: list[Record] = []
    seen: set[str] = set()
    max_draws = 200 * n + 2000
    for _ in range(max_draws):
        if len(records) >= n:
            break
        level = rng.choice(list(levels))
        template = rng.choice(by_level[level])
        problem = template.make(rng, level)
        if problem.question in seen or (
                not unseen and split_of((template.name, problem.numbers), test_fraction) != split):
            continue
        seen.add(problem.question)
        solution = "\n".join(problem.steps) + f"\n#### {problem.answer}"
        records.append({
            "id": "arith-" + stable_hash(problem.question)[:16],
            "prompt": problem.question if prompt_template is None else format_prompt(problem.question, prompt_template),
            "question": problem.question,
            "answer": str(problem.answer),
            "solution": solution,
            "task": template.task,
            "template": template.name,
            "level": level,
            "topic": template.task,
        })
    if len(records) < n:
        raise ConfigError(f"arithmetic: only {len(records)} distinct {split} problems ({phrasings} phrasings) "
                          f"found for levels {list(levels)} and tasks {tasks or 'all'}; ask for fewer or "
                          "widen them")
    return records


@register_source("arithmetic", keys=("split", "n", "seed", "levels", "tasks", "test_fraction", "prompt_template",
                                     "phrasings"))
def arithmetic_source(spec: Mapping[str, Any]) -> Source:
    """``{"type": "arithmetic", "split": "test", "n": 200, "seed": 0, "levels": [1, 2]}``;
    ``"phrasings": "unseen"`` (test split only) for the held-out templates."""
    levels = spec.get("levels", LEVELS)
    levels = [levels] if isinstance(levels, int) else list(levels)
    split, phrasings = spec.get("split", "train"), spec.get("phrasings", "seen")
    records = generate_arithmetic(int(spec.get("n", 500)), split=split, seed=int(spec.get("seed", 0)),
                                  levels=levels, tasks=spec.get("tasks"),
                                  test_fraction=float(spec.get("test_fraction", 0.2)),
                                  prompt_template=spec.get("prompt_template", DEFAULT_ARITHMETIC_TEMPLATE),
                                  phrasings=phrasings)
    name = f"arithmetic ({split}, unseen phrasings)" if phrasings == "unseen" else f"arithmetic ({split})"
    return Source.from_records(name, records)
