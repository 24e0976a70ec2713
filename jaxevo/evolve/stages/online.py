"""The online stage: `grpo` runs a round's online RL steps (evolve/online.py) on the round's
prompts, from the round's start model, and exports the model its folder keeps (train/final)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from jaxevo import distributed
from jaxevo.evolve.context import RoundContext
from jaxevo.evolve.online import run_online
from jaxevo.evolve.recipe import stage
from jaxevo.evolve.rundir import read_jsonl
from jaxevo.evolve.stages.training import Interrupted


@stage("grpo", reads=("prompts.jsonl",), writes=("model",))
def grpo_stage(ctx: RoundContext, out: Path) -> dict[str, Any]:
    """`grpo.steps` online steps (sample, score, advantages, μ updates) over this round's prompts."""
    items = read_jsonl(ctx.input("prompts.jsonl"))
    result = run_online(ctx, out, items, ctx.start_model())
    if result.interrupted:
        raise Interrupted(f"online training stopped at step {result.steps} (stop_at)")
    if not ctx.cfg.run.keep_checkpoints and distributed.is_main():
        shutil.rmtree(out / "train" / "checkpoints", ignore_errors=True)
    hist = result.history
    keys = ("reward", "kl", "loss", "completions/mean_length", "frac_reward_zero_std", "tokens_per_s")
    summary = lambda m: {k: round(m[k], 5) for k in keys if k in m}  # noqa: E731
    return {"model": str(result.export_dir.relative_to(out.absolute())), "steps": result.steps,
            "completions": result.steps * ctx.cfg.grpo.prompts_per_step * ctx.cfg.grpo.group_size,
            "first": summary(hist[0]) if hist else None, "final": summary(hist[-1]) if hist else None}
