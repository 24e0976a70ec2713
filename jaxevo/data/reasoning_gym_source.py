"""Procedurally generated problems from the `reasoning-gym` package, scored by its own verifiers.

    prompts: {source: {type: reasoning_gym, tasks: {basic_arithmetic: 200, leg_counting: 100}, seed: 0}}
    score:   {scorer: rewards, rewards: [{fn: reasoning_gym}]}

Source spec keys: ``tasks`` (a list of task names, each drawing ``size`` problems, or a mapping
name -> size), ``size`` (default 100), ``seed`` (default 0; take eval problems with another seed),
``config`` (a mapping task -> that task's generator settings, e.g. ``{basic_arithmetic:
{max_terms: 3}}``) and ``system`` (the system turn; default reasoning-gym's own "default" prompt,
which asks for the final answer in ``<answer>...</answer>``; ``none`` for no system turn). Tasks
are interleaved, so every round's slice mixes them.

A record keeps the question as its prompt, the answer as `answer`, the task as `task`, and where
the problem comes from (`rg_task`, `rg_index`, `rg_seed`, `rg_size`, `rg_config`), so the
`reasoning_gym` reward can rebuild the exact entry and call that data set's `score_answer` on the
completion's last ``<answer>`` tag (reasoning-gym's `extract_answer`). A completion without one
scores 0; a record from another source gets no opinion (None).

`reasoning-gym` is an optional dependency (the `test` extra installs it), imported when a source
or the reward is built: it takes seconds and most runs do not use it.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Mapping

from jaxevo.data.base import Source, register_source
from jaxevo.errors import ConfigError
from jaxevo.rewards import register_reward

__all__ = ["reasoning_gym_source", "reasoning_gym_reward"]


def _gym():
    try:
        import reasoning_gym  # deferred: optional and slow to import
    except ImportError:
        raise ConfigError("the reasoning_gym source needs the reasoning-gym package: "
                          "pip install reasoning-gym (or jaxevo[test])") from None
    return reasoning_gym


@functools.lru_cache(maxsize=64)
def _dataset(task: str, size: int, seed: int, config_json: str):
    """The task's data set (cached: the reward rebuilds it for every scored record)."""
    gym = _gym()
    config = json.loads(config_json)
    try:
        return gym.create_dataset(task, size=size, seed=seed, **config)
    except ValueError as e:  # an unknown task
        known = ", ".join(sorted(gym.factory.DATASETS))
        raise ConfigError(f"reasoning_gym source: {e}; known tasks: {known}") from None
    except TypeError as e:  # a setting the task's config does not take
        raise ConfigError(f"reasoning_gym source: task {task!r}: {e}") from None


def _tasks(spec: Mapping[str, Any]) -> list[tuple[str, int]]:
    tasks, size = spec.get("tasks"), spec.get("size", 100)
    if isinstance(tasks, str):
        tasks = [tasks]
    if isinstance(tasks, Mapping):
        pairs = [(str(k), int(v)) for k, v in tasks.items()]
    elif isinstance(tasks, (list, tuple)) and tasks:
        pairs = [(str(t), int(size)) for t in tasks]
    else:
        raise ConfigError("reasoning_gym source: 'tasks' is required: a list of task names or "
                          "{task: size}")
    if any(n < 1 for _, n in pairs):
        raise ConfigError(f"reasoning_gym source: every size must be >= 1, got {dict(pairs)}")
    return pairs


@register_source("reasoning_gym", keys=("tasks", "size", "seed", "config", "system"))
def reasoning_gym_source(spec: Mapping[str, Any]) -> Source:
    """See the module doc."""
    gym = _gym()
    seed = int(spec.get("seed", 0))
    configs = spec.get("config") or {}
    if not isinstance(configs, Mapping):
        raise ConfigError("reasoning_gym source: 'config' must map task names to their settings")
    system = spec.get("system", "default")
    if system == "default":
        system = gym.utils.SYSTEM_PROMPTS["default"]
    elif system in (None, "none"):
        system = None
    pairs = _tasks(spec)
    unknown = sorted(set(configs) - {t for t, _ in pairs})
    if unknown:
        raise ConfigError(f"reasoning_gym source: config for task(s) {unknown} not in 'tasks'")
    sets = [(t, n, json.dumps(configs.get(t, {}), sort_keys=True)) for t, n in pairs]
    order = [(k, i) for i in range(max(n for _, n in pairs)) for k, (_, n) in enumerate(pairs) if i < n]
    for t, n, cfg in sets:
        _dataset(t, n, seed, cfg)  # an unknown task or setting fails now

    def get(j: int) -> dict[str, Any]:
        k, i = order[j]
        task, size, cfg = sets[k]
        entry = _dataset(task, size, seed, cfg)[i]
        record = {"id": f"rg/{task}/{seed}/{i}", "prompt": entry["question"], "task": task,
                  "rg_task": task, "rg_index": i, "rg_seed": seed, "rg_size": size,
                  "rg_config": json.loads(cfg)}
        if entry.get("answer") is not None:
            record["answer"] = str(entry["answer"])
        if system is not None:
            record["system"] = system
        return record

    return Source(f"reasoning_gym:{'+'.join(t for t, _ in pairs)} (seed {seed})", get, len(order))


@register_reward("reasoning_gym")
def reasoning_gym_reward(prompts, completions, rg_task=None, rg_index=None, rg_seed=None, rg_size=None,
                         rg_config=None, **columns) -> list[float | None]:
    """reasoning-gym's own verdict (`score_answer`, in [0, 1]) on the completion's last
    <answer>...</answer>; 0 without one; None for a record from another source."""
    n = len(completions)
    tasks, idx, seeds, sizes = (rg_task or [None] * n, rg_index or [None] * n, rg_seed or [None] * n,
                                rg_size or [None] * n)
    configs = rg_config or [None] * n
    out: list[float | None] = []
    for c, task, i, seed, size, cfg in zip(completions, tasks, idx, seeds, sizes, configs):
        if task is None:
            out.append(None)
            continue
        text = c if isinstance(c, str) else c[-1]["content"]  # a chat completion: its message
        answer = _gym().utils.extract_answer(text)
        ds = _dataset(task, int(size), int(seed), json.dumps(cfg or {}, sort_keys=True))
        out.append(0.0 if answer is None else float(ds.score_answer(answer=answer, entry=ds[int(i)])))
    return out
