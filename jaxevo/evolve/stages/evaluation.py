"""The stages that judge the round's model: held-out accuracy (with the paired win rate against
the round before) and the round gate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jaxevo import distributed
from jaxevo.evolve.context import RoundContext
from jaxevo.evolve.recipe import stage
from jaxevo.evolve.rundir import read_jsonl


@stage("eval", writes=("results.jsonl", "eval.json"))
def eval_stage(ctx: RoundContext, out: Path) -> dict[str, Any]:
    """Held-out accuracy of the round's model (and on `eval.unseen_source`, under "unseen"), and
    its win rate against the previous round's."""
    info = {"model": ctx.latest_model(), **ctx.evaluate_held_out(ctx.latest_model(), out)}
    prev = ctx.output("eval", ctx.round - 1) / "results.jsonl"
    if distributed.is_main() and prev.exists():  # process 0 wrote results.jsonl and the manifest
        info["vs_previous"] = win_rate(read_jsonl(prev), read_jsonl(out / "results.jsonl"))
    return info


@stage("gate")
def gate_stage(ctx: RoundContext, out: Path) -> dict[str, Any]:
    """Keep the round's model only if its greedy accuracy on the labelled validation items of
    `rounds.gate` is at least the kept model's (the round's start model) + `gate_min_gain`. The
    kept model's accuracy comes from the previous round's gate, or is measured here (round 1)."""
    r = ctx.cfg.rounds
    if not r.gate:
        return {"skipped": "gate off"}
    new = ctx.latest_model()
    prev = ctx.run.stage_info(ctx.round - 1, "gate")
    if new == ctx.start_model():  # nothing to judge; the kept model and its accuracy carry over
        carried = {"kept_accuracy": prev["kept_accuracy"]} if "kept_accuracy" in prev else {}
        return {"skipped": "the round trained no model", **carried}
    if "kept_accuracy" in prev:
        start_acc = prev["kept_accuracy"]
    else:
        start_acc = ctx.evaluate(ctx.start_model(), out / "start", source=r.gate)["accuracy"]
    acc = ctx.evaluate(new, out / "round", source=r.gate)["accuracy"]
    accepted = acc - start_acc >= r.gate_min_gain
    return {"accepted": accepted, "accuracy": acc, "start_accuracy": start_acc,
            "kept_accuracy": acc if accepted else start_acc}


def win_rate(before: list[dict], after: list[dict]) -> dict[str, Any]:
    """Paired comparison of two evaluations of the same items (by id): a win is an item the new
    model gets right and the previous one wrong; win_rate = (wins + ties / 2) / items."""
    old = {r["id"]: bool(r["correct"]) for r in before}
    pairs = [(old[r["id"]], bool(r["correct"])) for r in after if r["id"] in old]
    wins = sum(b and not a for a, b in pairs)
    losses = sum(a and not b for a, b in pairs)
    n = len(pairs)
    return {"win_rate": (wins + (n - wins - losses) / 2) / n if n else None, "wins": wins,
            "losses": losses, "items": n}
