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
import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np
from tqdm.auto import tqdm

from jaxevo import preemption
from jaxevo.dirlock import DirLock
from jaxevo.config import to_dict
from jaxevo.errors import JaxevoError
from jaxevo.lora.adapters import merge
from jaxevo.lora.peft import write_peft
from jaxevo.lora.quantize import dequantize_base
from jaxevo.plugins import load_plugins
from jaxevo.train.batches import Batch
from jaxevo.train.builder import Trainer, build
from jaxevo.train.checkpoint import (check_saves, close_quietly, export_model, save_checked,
                                     wait_checked)
from jaxevo.train.config import TrainConfig
from jaxevo.train.state import TrainState
from jaxevo.train.step import fetch, finalize_metrics, to_global
from jaxevo.train.tblog import MetricsLogger
from jaxevo.weights.convert import _to_host

log = logging.getLogger(__name__)


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
          stop_at: int | None = None, mesh=None, key_prefix: str = "") -> TrainResult:
    """Run (or resume) the phase described by ``cfg``; see the module doc.

    ``pretrained``: a `jaxevo.weights.load.Pretrained` to train instead of loading
    ``cfg.model.path`` (its params should be laid out for ``mesh``); ``records``: in-memory
    examples instead of ``cfg.data.path``; ``stop_at``: stop (with a checkpoint) after this
    optimizer step, as if interrupted — the schedule still follows the full ``total_steps``;
    ``key_prefix``: where this phase's keys sit in the user's config (``"sft."`` under
    `evolve`), so messages name the key the user can set. ``cfg.out_dir`` is locked for the
    call (`jaxevo.dirlock`): a second writer is refused.
    """
    load_plugins(cfg.plugins, "plugins")  # a loss or objective they register can be named
    with DirLock(cfg.out_dir, "jaxevo train", enabled=jax.process_index() == 0):
        return _train(cfg, pretrained, records, stop_at, mesh, key_prefix)


def _train(cfg, pretrained, records, stop_at, mesh, key_prefix) -> TrainResult:
    t = build(cfg, pretrained=pretrained, records=records, mesh=mesh)
    ckpt = t.checkpointer
    end = t.total if stop_at is None else min(t.total, int(stop_at))
    state, history = t.state, []
    last_saved = t.restored_step
    preempted = False
    progress = _Progress(t, end)
    growth = _GrowthWatch(key_prefix)
    # SIGTERM (how TPU VMs announce preemption) and Ctrl-C only set a flag while training: the
    # loop ends after the current step with a checkpoint. Outside training the defaults apply.
    preemption.reset()
    preemption.install()
    t_start = time.time()
    try:
        for s in range(t.start, end):
            state, m = _run_step(t, state, t.stream.batch(s))
            if not m["finite"]:
                raise _diverged(s + 1, m, last_saved, ckpt.dir, key_prefix)
            history.append(m)
            progress.update(s + 1, m)
            growth.check(s + 1, m)
            every = cfg.checkpoint.every
            if every and (s + 1) % every == 0 and s + 1 < end:
                save_checked(ckpt, s + 1, state, t.meta(s + 1))
                last_saved = s + 1
            else:
                check_saves(ckpt)  # an async save that failed ends the run now
            if preemption.should_stop(s + 1) and s + 1 < end:  # a signal: checkpoint, then stop
                preempted = True
                break
        done = int(fetch(state.step))
        finished = done == t.total and not cfg.checkpoint.final  # nothing left to resume
        if done != last_saved and (end > t.start or t.restored_step is None) and not finished:
            save_checked(ckpt, done, state, t.meta(done))
        wait_checked(ckpt)
    finally:
        preemption.uninstall()
        progress.close()
        close_quietly(ckpt)
    if preempted:
        exc = preemption.Preempted(done, str(ckpt.dir), preemption.exit_code())
        log.warning("%s", exc)
        raise exc
    stats = dict(t.stats, train_s=round(time.time() - t_start, 3))

    export_dir = None
    if cfg.checkpoint.export and done == t.total:
        params, extra, head = state.params, None, None
        if t.objective.reads == "score":  # a reward model: HF *ForSequenceClassification
            params, head = params["decoder"], params["score"]
        if t.base is not None:  # LoRA: the merged model, and the adapters (PEFT format) beside it
            params = merge(dequantize_base(t.base, t.model_cfg), state.params, cfg.lora)
            # Gathered on every process (a collective; adapters are small), written by process 0.
            adapters = jax.tree.map(_to_host, state.params)
            extra = lambda d: write_peft(adapters, cfg.lora, t.model_cfg,  # noqa: E731
                                         d / "adapter", base_model=str(cfg.model.path))
        export_dir = export_model(
            params, t.model_cfg, Path(cfg.out_dir) / "final", tokenizer=t.tokenizer,
            info={"step": t.total, "objective": t.objective.name, "base_model": cfg.model.path,
                  "config": to_dict(cfg)}, extra=extra, head=head)
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
              ckpt_dir: Path, key_prefix: str = "") -> TrainingDivergedError:
    where = (f"the last good checkpoint is step {last_saved} in {ckpt_dir}"
             if last_saved is not None else "no checkpoint was written yet")
    return TrainingDivergedError(
        f"training diverged at step {step}: loss={m['loss']}, grad_norm={m['grad_norm']}, "
        f"param_norm={m['param_norm']} (not finite); the update was skipped and training "
        f"stopped; {where}. Lower {key_prefix}optim.lr, enable {key_prefix}optim.clip_norm, or "
        f"check the data; then rerun the same command with the new value to resume")


class _GrowthWatch:
    """Warns once when the loss grows ``FACTOR``-fold over its first value while staying finite
    (a divergence in slow motion, which the not-finite check only catches much later)."""

    FACTOR = 1e3

    def __init__(self, key_prefix: str = ""):
        self.first: float | None = None
        self.warned, self.key_prefix = False, key_prefix

    def check(self, step: int, m: dict[str, float]) -> bool:
        loss = abs(float(m["loss"]))
        if self.first is None:
            self.first = max(loss, 1e-6)
            return False
        if not self.warned and loss > self.FACTOR * self.first:
            self.warned = True
            log.warning("loss at step %d is %.4g, %.0fx its first value %.4g: training is likely "
                        "diverging; consider a lower %soptim.lr or %soptim.clip_norm", step, loss,
                        loss / self.first, self.first, self.key_prefix, self.key_prefix)
            return True
        return False


class _Progress:
    """Metrics JSONL + TensorBoard (process 0, every ``log.every`` steps) and the tqdm bar."""

    def __init__(self, t: Trainer, end: int):
        c = t.cfg.log
        self.every, self.end = max(1, c.every), end
        if jax.process_index() == 0:
            _drop_rows_after(Path(t.cfg.out_dir) / "metrics.jsonl", t.start)
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


def _drop_rows_after(path: Path, step: int) -> None:
    """Keep only the metrics rows of steps <= ``step`` (the checkpoint resumed from): the steps
    after it run again, and would otherwise appear twice."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    keep = []
    for line in lines:
        try:
            if int(json.loads(line)["step"]) <= step:
                keep.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a kill
    if len(keep) != len(lines):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(keep))
        tmp.replace(path)
