"""Scores for completions made anywhere (`jaxevo generate`, another engine, an earlier run): one
answer checker, or TRL-style reward functions combined with weights (`jaxevo.rewards`).

    rows, summary = score_rows(rows, checker=get_checker("number"))
    rows, summary = score_rows(rows, rewards=parse_rewards(["my_mod:fn"], "--reward"))

A row is a record with "completions" (strings) and its prompt ("prompt" or chat "messages") plus
whatever fields its checker or rewards read. Each returned row is the input row plus "scores",
one per completion (None where no reward function had an opinion); with several rewards also
"reward_scores" ({name: [score per completion]}). Pure: no model, no jax.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from jaxevo.checkers import Checker, check_record_fields
from jaxevo.errors import ConfigError
from jaxevo.rewards import WeightedReward, reward_inputs, score_rewards

__all__ = ["score_rows", "check_rows", "mean_or_none"]

# Fields of a generate output line that are not the record's: not passed to reward functions.
NOT_COLUMNS = ("prompt", "messages", "completions", "logprobs", "scores", "reward_scores")


def check_rows(rows: Sequence[Mapping[str, Any]], where: Callable[[int], str]) -> None:
    """Every row has a prompt and a list of string completions; a ConfigError names `where(i)`."""
    for i, row in enumerate(rows):
        if "prompt" not in row and "messages" not in row:
            raise ConfigError(f"{where(i)}: no \"prompt\" or \"messages\" field (keys: {sorted(row)})")
        comps = row.get("completions")
        if not isinstance(comps, list) or not all(isinstance(c, str) for c in comps):
            raise ConfigError(f"{where(i)}: \"completions\" must be a list of strings (jaxevo generate's "
                              f"output), got {type(comps).__name__}")


def mean_or_none(values: Sequence[float | None]) -> float | None:
    """The mean of the non-None values (None when there are none)."""
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def score_rows(rows: Sequence[Mapping[str, Any]], *, checker: Checker | None = None,
               rewards: Sequence[WeightedReward] = (),
               where: Callable[[int], str] = lambda i: f"record {i}") -> tuple[list[dict], dict[str, Any]]:
    """(rows with "scores", summary). Exactly one of `checker` / `rewards`. Every row is checked
    before any is scored, so a bad line fails before any work (its place from `where(i)`).

    Summary: records, completions, scored (non-None), mean; a checker adds accuracy (share of
    completions it accepts, score >= 1) and format_rate (its `well_formatted`); rewards add each
    function's mean under "rewards"."""
    if (checker is None) == (not rewards):
        raise ConfigError("score with one checker or with reward functions (not both, not neither)")
    check_rows(rows, where)
    out = [dict(r) for r in rows]
    summary: dict[str, Any] = {"records": len(rows), "completions": sum(len(r["completions"]) for r in rows)}
    if checker is not None:
        for i, row in enumerate(rows):
            check_record_fields(checker, row, where(i))
        flat, formatted = [], []
        for row in out:
            row["scores"] = [_number(checker.check(c, row), checker.name) for c in row["completions"]]
            flat += row["scores"]
            formatted += [bool(checker.well_formatted(c, row)) for c in row["completions"]]
        accepted = sum(s is not None and s >= 1.0 for s in flat)
        summary.update(checker=checker.name, accuracy=accepted / max(1, len(flat)),
                       format_rate=sum(formatted) / max(1, len(formatted)))
    else:
        records = [{k: v for k, v in r.items() if k not in NOT_COLUMNS or k in ("prompt", "messages")}
                   for r in rows]
        prompts, completions, columns = reward_inputs(records, [r["completions"] for r in rows])
        flat, per = score_rewards(rewards, prompts, completions, columns)
        pos = 0
        for row in out:
            n = len(row["completions"])
            row["scores"] = flat[pos:pos + n]
            if len(per) > 1:
                row["reward_scores"] = {name: s[pos:pos + n] for name, s in per.items()}
            pos += n
        summary["rewards"] = {name: {"weight": r.weight, "mean": mean_or_none(s)}
                              for (name, s), r in zip(per.items(), rewards)}
    summary.update(scored=sum(s is not None for s in flat), mean=mean_or_none(flat))
    return out, summary


def _number(v: Any, name: str) -> float | None:
    if v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        raise ConfigError(f"checker {name!r} returned {v!r}; expected a number or None") from None
