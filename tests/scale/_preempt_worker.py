"""Subprocess side of the SIGTERM test: `train_preemptible` on a tiny SFT run.

    python -m tests.scale._preempt_worker RUN_DIR [slow]

``slow`` sleeps 1 s after each 2-step segment so the test can deliver SIGTERM mid-training.
Exits 143 when preempted (checkpoint on disk), 0 when done (RUN_DIR/params.npz written).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import jax
import numpy as np


def main(run_dir: Path, slow: bool) -> None:
    from jaxevo.config import load_config
    from jaxevo.preemption import train_preemptible
    from jaxevo.train import TrainConfig, train
    from tests.train.helpers import pretrained, sft_records

    cfg = load_config(TrainConfig, None, [
        f"out_dir={run_dir}", "steps=8", "batch_size=4", "seed=2", "data.chat_template=false",
        "data.pad_to_multiple=8", "data.max_length=32", "optim.lr=1e-2", "optim.warmup_steps=2",
        "checkpoint.every=2", "checkpoint.keep=10", "checkpoint.export=false",
        "log.progress=false", "log.tensorboard=false"])

    def segment(c, **kw):
        res = train(c, **kw)
        (run_dir / "segments.txt").open("a").write(f"{res.steps}\n")
        if slow:
            time.sleep(1.0)
        return res

    res = train_preemptible(cfg, train_fn=segment, pretrained=pretrained(0, dtype="float32"),
                            records=sft_records(12))
    flat = {jax.tree_util.keystr(k): np.asarray(v) for k, v in
            jax.tree_util.tree_flatten_with_path(jax.device_get(res.state.params))[0]}
    np.savez(run_dir / "params.npz", **flat)


if __name__ == "__main__":
    main(Path(sys.argv[1]), "slow" in sys.argv[2:])
