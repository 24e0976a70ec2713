"""Subprocess side of the SIGTERM test: `train` on a tiny SFT run.

    python -m tests.scale._preempt_worker RUN_DIR [slow]

``slow`` sleeps 0.5 s after every step (and notes the step in RUN_DIR/steps.txt) so the test can
deliver SIGTERM mid-training. Exits 143 when preempted (checkpoint on disk), 0 when done
(RUN_DIR/params.npz written).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import jax
import numpy as np


def main(run_dir: Path, slow: bool) -> None:
    from jaxevo.config import load_config
    from jaxevo.train import TrainConfig, loop, train
    from tests.train.helpers import pretrained, sft_records

    cfg = load_config(TrainConfig, None, [
        f"out_dir={run_dir}", "steps=8", "batch_size=4", "seed=2", "data.chat_template=false",
        "data.pad_to_multiple=8", "data.max_length=32", "optim.lr=1e-2", "optim.warmup_steps=2",
        "checkpoint.every=2", "checkpoint.keep=10", "checkpoint.export=false",
        "log.progress=false", "log.tensorboard=false"])

    if slow:  # a slow step, observable from outside: wrap the per-step metrics fetch
        finalize = loop.finalize_metrics

        def slow_finalize(raw):
            m = finalize(raw)
            with open(run_dir / "steps.txt", "a") as f:
                f.write("step\n")
            time.sleep(0.5)
            return m
        loop.finalize_metrics = slow_finalize

    res = train(cfg, pretrained=pretrained(0, dtype="float32"), records=sft_records(12))
    flat = {jax.tree_util.keystr(k): np.asarray(v) for k, v in
            jax.tree_util.tree_flatten_with_path(jax.device_get(res.state.params))[0]}
    np.savez(run_dir / "params.npz", **flat)


if __name__ == "__main__":
    main(Path(sys.argv[1]), "slow" in sys.argv[2:])
