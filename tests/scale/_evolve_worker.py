"""Subprocess side of the multi-process round-driver test: one round of the EVOLVE recipe (sample,
refine, verifier scores, SFT, preference, eval), or of the online GRPO recipe (sampling and
training alternating), on a tiny random model over all global devices (mesh (2, 2, 2); sampling
in float32: a random model's near-flat distribution turns bf16 rounding differences between
shardings into different samples).

    python -m tests.scale._evolve_worker OUT MODEL_DIR [evolve|grpo]   # env as in `_mp_worker`

Process 0 creates the tiny model directory if it is missing (the others wait); every process
runs `run_evolve` on OUT/run and writes what it saw into OUT/proc<i>.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from jaxevo import distributed

distributed.initialize()  # from JAXEVO_* env (two-process run) or a no-op (single process)

import jax  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SHRINK = [
    "run.rounds=1", "run.progress=false", "model.mesh=[2,2,2]", "model.sample_dtype=float32",
    "prompts.per_round=4", "sample.n=2", "sample.max_new_tokens=10", "sample.batch_size=8",
    "refine.max_new_tokens=10", "eval.source.n=4", "eval.max_new_tokens=10", "eval.batch_size=8",
    "select.min_score=0.0", "select.require_format=false", "select.allow_truncated=true",
    "select.pairs=rule", "select.min_margin=0.0",  # a random model is never verifiably right
    "sft.batch_size=8", "preference.batch_size=8", "sft.optim.lr=1e-2", "preference.optim.lr=1e-2",
]
# Two online steps of 2 prompts x 4 samples (a batch of 8 over the 4 data x fsdp shards), rewarded
# by the parity of the text (a random model never answers: the verifier would give no advantage).
ONLINE = [
    "run.rounds=1", "run.progress=false", "model.mesh=[2,2,2]", "model.sample_dtype=float32",
    "eval.before=false", "prompts.per_round=4", "grpo.steps=2", "grpo.prompts_per_step=2",
    "grpo.group_size=4", "grpo.micro_batch_size=4", "grpo.rewards={test_parity: 1.0}", "grpo.beta=0.04",
    "grpo.train.optim.lr=1e-2", "grpo.train.model.dtype=float32", "sample.max_new_tokens=10",
    "sample.batch_size=8", "eval.source.n=4", "eval.max_new_tokens=10", "eval.batch_size=8",
    "eval.unseen_source=null",
]


def make_model(d: Path) -> None:
    from jaxevo.models.config import ModelConfig
    from jaxevo.weights.load import load_tokenizer
    from jaxevo.weights.embedded import resolve_embedded
    from jaxevo.weights.hf import export_hf
    from tests.conftest import random_params

    cfg = ModelConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_layers=2,
                      num_heads=4, num_kv_heads=2, head_dim=8, max_position_embeddings=1024,
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    export_hf(random_params(cfg), cfg, d,
              tokenizer=load_tokenizer(resolve_embedded("smollm2-135m-instruct")))


def main(out: Path, model: Path, recipe: str = "evolve") -> None:
    from jaxevo.config import load_config, to_dict
    from jaxevo.evolve.config import EvolveConfig
    from jaxevo.evolve.driver import run_evolve
    from jaxevo.evolve.scorers import register_scorer
    from tests.evolve.test_online import parity

    if distributed.is_main() and not (model / "config.json").exists():
        make_model(model)
    distributed.barrier("evolve_worker_model")
    register_scorer("test_parity")(parity)
    cfg = load_config(EvolveConfig, ROOT / "configs" / f"{recipe}.yaml",
                      [f"run.dir={out / 'run'}", f"model.path={model}",
                       *(ONLINE if recipe == "grpo" else SHRINK)])
    manifest = run_evolve(cfg, to_dict(cfg))
    (out / f"proc{jax.process_index()}.json").write_text(json.dumps({
        "process": jax.process_index(), "processes": jax.process_count(),
        "devices": jax.device_count(), "manifest": manifest}))


if __name__ == "__main__":
    o = Path(sys.argv[1])
    o.mkdir(parents=True, exist_ok=True)
    main(o, Path(sys.argv[2]), *sys.argv[3:])
