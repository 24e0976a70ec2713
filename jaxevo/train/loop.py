"""The training loop of one SFT or preference phase.

    result = train(cfg)                       # everything from the config
    result = train(cfg, pretrained=pre, records=rows)   # in-memory model / data (tests, drivers)

`jaxevo.train.builder.build` sets everything up (model, data, reference log-probs, the step, the
state fresh or restored, the batch stream, the checkpointer); this module runs the steps
(metrics JSONL + TensorBoard + tqdm, checkpoints every N steps), then writes the final checkpoint
and the export (``out_dir/final``: a jaxevo checkpoint dir any command loads).

A step whose loss, gradient or update is not finite is skipped inside the jitted step and the
loop raises `TrainingDivergedError` naming the step; checkpoints written before stay intact.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np
from tqdm.auto import tqdm

from jaxevo import preemption
from jaxevo.config import to_dict
from jaxevo.errors import JaxevoError
from jaxevo.plugins import load_plugins
from jaxevo.train.batches import Batch
from jaxevo.train.builder import Trainer, build
from jaxevo.train.checkpoint import export_model
from jaxevo.train.config import TrainConfig
from jaxevo.train.state import TrainState
from jaxevo.train.step import fetch, finalize_metrics, to_global
from jaxevo.train.tblog import MetricsLogger


class TrainingDivergedError(JaxevoError):
    """The loss, gradient or update became NaN/inf; the update was not applied."""


@dataclasses.dataclass
class TrainResult:
    state: TrainState
    steps: int  # optimizer steps done (state.step)
    history: list[dict[str, float]]  # metrics of the steps run in this call
    out_dir: Path
    export_dir: Path | None
    stats: dict[str, Any]


def train(cfg: TrainConfig, *, pretrained=None, records: Sequence[dict] | None = None,
          stop_at: int | None = None, mesh=None) -> TrainResult:
    """Run (or resume) the phase described by ``cfg``; see the module doc.

    ``pretrained``: a `jaxevo.weights.load.Pretrained` to train instead of loading
    ``cfg.model.path`` (its params should be laid out for ``mesh``); ``records``: in-memory
    examples instead of ``cfg.data.path``; ``stop_at``: stop (with a checkpoint) after this
    optimizer step, as if interrupted — the schedule still follows the full ``total_steps``.
    """
    load_plugins(cfg.plugins, "plugins")  # a loss or objective they register can be named
    t = build(cfg, pretrained=pretrained, records=records, mesh=mesh)
    ckpt = t.checkpointer
    end = t.total if stop_at is None else min(t.total, int(stop_at))
    state, history = t.state, []
    last_saved = t.restored_step
    preempted = False
    progress = _Progress(t, end)
    # SIGTERM (how TPU VMs announce preemption) only sets a flag while training: the loop ends
    # after the current step with a checkpoint. Outside training the default handler applies.
    preemption.install()
    t_start = time.time()
    try:
        for s in range(t.start, end):
            state, m = _run_step(t, state, t.stream.batch(s))
            if not m["finite"]:
                raise _diverged(s + 1, m, last_saved, ckpt.dir)
            history.append(m)
            progress.update(s + 1, m)
            every = cfg.checkpoint.every
            if every and (s + 1) % every == 0 and s + 1 < end:
                ckpt.save(s + 1, state, t.meta(s + 1))
                last_saved = s + 1
            if preemption.should_stop(s + 1) and s + 1 < end:  # SIGTERM: checkpoint, then stop
                preempted = True
                break
        done = int(fetch(state.step))
        finished = done == t.total and not cfg.checkpoint.final  # nothing left to resume
        if done != last_saved and (end > t.start or t.restored_step is None) and not finished:
            ckpt.save(done, state, t.meta(done))
        ckpt.wait()
    finally:
        preemption.uninstall()
        progress.close()
        ckpt.close()
    if preempted:
        raise preemption.Preempted(done, str(ckpt.dir))
    stats = dict(t.stats, train_s=round(time.time() - t_start, 3))

    export_dir = None
    if cfg.checkpoint.export and done == t.total:
        export_dir = export_model(
            state.params, t.model_cfg, Path(cfg.out_dir) / "final", tokenizer=t.tokenizer,
            info={"step": t.total, "objective": t.objective.name, "base_model": cfg.model.path,
                  "config": to_dict(cfg)})
    return TrainResult(state=state, steps=done, history=history, out_dir=Path(cfg.out_dir),
                       export_dir=export_dir, stats=stats)


def _run_step(t: Trainer, state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, float]]:
    """One optimizer step on a host batch; host metrics with timing and token throughput."""
    tokens = int(sum(np.count_nonzero(v["segments"]) for v in batch.views.values()))
    t0 = time.time()
    state, raw = t.step(state, to_global(batch, t.mesh))
    m = finalize_metrics(fetch(raw))  # fetching waits for the step: the time below is the step's
    dt = time.time() - t0
    m.update(step_time_s=dt, tokens_per_s=tokens / dt if dt > 0 else 0.0, tokens=tokens)
    return state, m


def _diverged(step: int, m: dict[str, float], last_saved: int | None,
              ckpt_dir: Path) -> TrainingDivergedError:
    where = (f"the last good checkpoint is step {last_saved} in {ckpt_dir}"
             if last_saved is not None else "no checkpoint was written yet")
    return TrainingDivergedError(
        f"training diverged at step {step}: loss={m['loss']}, grad_norm={m['grad_norm']}, "
        f"param_norm={m['param_norm']} (not finite); the update was skipped and training "
        f"stopped; {where}. Lower optim.lr, enable optim.clip_norm, or check the data")


class _Progress:
    """Metrics JSONL + TensorBoard (process 0, every ``log.every`` steps) and the tqdm bar."""

    def __init__(self, t: Trainer, end: int):
        c = t.cfg.log
        self.every, self.end = max(1, c.every), end
        self.logger = (MetricsLogger(t.cfg.out_dir, tensorboard=c.tensorboard)
                       if jax.process_index() == 0 else None)
        self.bar = (tqdm(total=t.total, initial=t.start, desc=f"train {t.objective.name}",
                         unit="step", dynamic_ncols=True) if c.progress and end > t.start else None)

    def update(self, step: int, m: dict[str, float]) -> None:
        if self.logger and (step % self.every == 0 or step == self.end):
            self.logger.log(step, m)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{m['loss']:.4f}", tok_s=f"{m['tokens_per_s']:.0f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.logger:
            self.logger.close()
