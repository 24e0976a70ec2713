"""Reward functions with TRL's convention, and how several combine.

    def my_reward(prompts, completions, **columns) -> list[float | None]: ...

`prompts[i]` is the prompt of completion `completions[i]` (a string; for a record that holds chat
`messages`, the message list, and then, as in TRL, the completion is
`[{"role": "assistant", "content": text}]`). `columns` are the prompt records' other fields, one
list per field aligned with the completions (`answer=[...]`, `id=[...]`; a field a record lacks
is None there). A reward returns one number per completion, or None for "no opinion". The call
is by keyword, as TRL's `GRPOTrainer` makes it, so a TRL reward function works unchanged.

Several rewards combine as in TRL 1.16 (`GRPOTrainer._generate_and_score_completions`): the
weighted sum over the functions that had an opinion (None counts as absent: a nansum), and
None when none had one (TRL marks that completion unscorable). A None score is never accepted
into SFT data nor used in a pair (`evolve/select.py`).

Name a reward in a config by `module:fn` (`jaxevo.plugins`) or by a name registered with
`@register_reward("name")`:

    score: {scorer: rewards, rewards: [{fn: my_rewards:brevity, weight: 0.5}, {fn: correct}]}
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Any, Callable, Mapping, Sequence

from jaxevo.errors import ConfigError
from jaxevo.plugins import check_signature
from jaxevo.registry import Registry

__all__ = ["REWARDS", "RewardFn", "WeightedReward", "register_reward", "parse_rewards", "call_reward",
           "combine", "score_rewards", "reward_inputs"]

RewardFn = Callable[..., Sequence[float | None]]
SIGNATURE = "fn(prompts, completions, **columns) -> list[float | None]"


def _plain_reward(fn: object, ref: str, where: str) -> RewardFn:
    check_signature(fn, ("prompts", "completions"), where, kwargs=True, by_name=True, partial=True,
                    expected=SIGNATURE)
    return fn  # type: ignore[return-value]


REWARDS: Registry[RewardFn] = Registry("reward", adapt=_plain_reward)


def register_reward(name: str, *aliases: str) -> Callable[[RewardFn], RewardFn]:
    """Decorator: register a TRL-style reward function under `name` (and each alias)."""
    def deco(fn: RewardFn) -> RewardFn:
        _plain_reward(fn, name, f"reward {name!r}")
        return REWARDS.add(name, fn, *aliases)
    return deco


@dataclasses.dataclass(frozen=True)
class WeightedReward:
    """One configured reward: its name as given (`module:fn` or registered), function and weight."""

    name: str
    fn: RewardFn
    weight: float = 1.0


def parse_rewards(specs: Sequence[Any], where: str = "score.rewards") -> tuple[WeightedReward, ...]:
    """The rewards of a config list: each `{fn: NAME, weight: W}` (weight 1 if absent) or a bare
    NAME. Every function is imported and its signature checked here, before any work."""
    if isinstance(specs, (str, Mapping)):
        specs = [specs]
    out = []
    for i, spec in enumerate(specs):
        at = f"{where}[{i}]"
        if isinstance(spec, str):
            spec = {"fn": spec}
        if not isinstance(spec, Mapping) or "fn" not in spec:
            raise ConfigError(f"{at}: give {{fn: module:function, weight: 1.0}} or a reward name, got {spec!r}")
        unknown = sorted(set(spec) - {"fn", "weight"})
        if unknown:
            raise ConfigError(f"{at}: unknown key(s) {', '.join(unknown)}; allowed: fn, weight")
        try:
            weight = float(spec.get("weight", 1.0))
        except (TypeError, ValueError):
            raise ConfigError(f"{at}.weight: expected a number, got {spec.get('weight')!r}") from None
        name = str(spec["fn"])
        out.append(WeightedReward(name, REWARDS.get(name, f"{at}.fn"), weight))
    return tuple(out)


def call_reward(reward: WeightedReward, prompts: Sequence[Any], completions: Sequence[Any],
                columns: Mapping[str, Sequence[Any]]) -> list[float | None]:
    """`reward.fn(prompts=..., completions=..., **columns)`, checked: one number or None per
    completion (NaN reads as None, as in TRL); anything else is a ConfigError naming the reward."""
    missing = [n for n in _required(reward.fn) if n not in columns and n not in ("prompts", "completions")]
    if missing:
        raise ConfigError(f"reward {reward.name!r} needs the field(s) {', '.join(missing)}, which the "
                          f"records do not have (their fields: {', '.join(sorted(columns)) or 'none'})")
    out = reward.fn(prompts=list(prompts), completions=list(completions), **columns)
    try:
        values = list(out)
    except TypeError:
        raise ConfigError(f"reward {reward.name!r} returned a {type(out).__name__}; "
                          f"it must return a list, one score per completion") from None
    if len(values) != len(completions):
        raise ConfigError(f"reward {reward.name!r} returned {len(values)} scores for {len(completions)} "
                          f"completions; it must return exactly one per completion (None = no opinion)")
    scores: list[float | None] = []
    for j, v in enumerate(values):
        if v is None:
            scores.append(None)
            continue
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ConfigError(f"reward {reward.name!r} returned {v!r} for completion {j}; "
                              f"expected a number or None") from None
        scores.append(None if math.isnan(f) else f)
    return scores


def _required(fn: RewardFn) -> list[str]:
    """The parameters `fn` requires (no default), by name."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.default is p.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def combine(per_reward: Sequence[Sequence[float | None]], weights: Sequence[float]) -> list[float | None]:
    """Weighted sum over the rewards with an opinion, per completion; None where none had one.
    `per_reward`: [n_rewards][n_completions]."""
    if not per_reward:
        return []
    out: list[float | None] = []
    for col in zip(*per_reward):
        have = [(v, w) for v, w in zip(col, weights) if v is not None]
        out.append(sum(v * w for v, w in have) if have else None)
    return out


def reward_inputs(records: Sequence[Mapping[str, Any]], texts: Sequence[Sequence[str]],
                  skip: Sequence[str] = ("prompt", "messages")) -> tuple[list, list, dict[str, list]]:
    """(prompts, completions, columns) for every (record, completion) pair, flattened in order:
    `texts[i]` are record i's completions. Columns are every field but `skip`."""
    keys: list[str] = []
    for r in records:
        keys += [k for k in r if k not in skip and k not in keys]
    prompts, completions, columns = [], [], {k: [] for k in keys}
    for r, ts in zip(records, texts):
        chat = r.get("messages")
        for t in ts:
            prompts.append(chat if chat is not None else r.get("prompt"))
            completions.append([{"role": "assistant", "content": t}] if chat is not None else t)
            for k in keys:
                columns[k].append(r.get(k))
    return prompts, completions, columns


def score_rewards(rewards: Sequence[WeightedReward], prompts: Sequence[Any], completions: Sequence[Any],
                  columns: Mapping[str, Sequence[Any]]) -> tuple[list[float | None], dict[str, list]]:
    """(combined score per completion, {reward name: its scores}) — one call per reward."""
    per: dict[str, list] = {}
    for i, r in enumerate(rewards):
        per[r.name if r.name not in per else f"{r.name}#{i}"] = call_reward(r, prompts, completions, columns)
    return combine(list(per.values()), [r.weight for r in rewards]), per
