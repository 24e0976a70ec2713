"""The trainer: one sharded train step for every objective, Orbax train state, the loop.

* :mod:`~jaxevo.train.config` — `TrainConfig` (frozen dataclasses; load with `jaxevo.config.load_config`)
* :mod:`~jaxevo.train.batches` — JSONL -> padded views -> fixed-size bucketed batches, packing
* :mod:`~jaxevo.train.objectives` — registry: objective name -> views + loss from `jaxevo.losses`
* :mod:`~jaxevo.train.optim` — AdamW with decay mask, schedules, clipping
* :mod:`~jaxevo.train.state` — `TrainState` and its shardings
* :mod:`~jaxevo.train.step` — the one jitted step (micro-batch scan, chunked log-probs, NaN guard)
* :mod:`~jaxevo.train.cpu_dots` — the step's XLA:CPU dot path, measured once per machine
* :mod:`~jaxevo.train.reference` — reference log-probs computed once
* :mod:`~jaxevo.train.checkpoint` — Orbax `Checkpointer`, `export_model` (jaxevo checkpoint dir)
* :mod:`~jaxevo.train.builder` — `build_step` (objective, optimizer, step; from shapes, so `plan`
  uses it too) and `build` (state, step, batch stream, checkpointer: a `Trainer`)
* :mod:`~jaxevo.train.loop` — `train(cfg)`: build, then run the steps
* :mod:`~jaxevo.train.rollout` — online RL: sampled completions as a batch, the `policy` objective,
  old/reference token log-probs (the loop is `jaxevo.evolve.online`)
"""

from jaxevo.train.builder import StepParts, Trainer, build, build_step
from jaxevo.train.config import TrainConfig
from jaxevo.train.loop import TrainingDivergedError, TrainResult, train
from jaxevo.train.objectives import OBJECTIVES, Objective, get_objective, register_objective
from jaxevo.train.rollout import rollout_batch, token_logps_fn

__all__ = ["OBJECTIVES", "Objective", "StepParts", "TrainConfig", "TrainResult", "Trainer",
           "TrainingDivergedError", "build", "build_step", "get_objective", "register_objective",
           "rollout_batch", "token_logps_fn", "train"]
