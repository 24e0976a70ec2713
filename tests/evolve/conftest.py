"""A tiny random model with SmolLM2's tokenizer, and the shipped recipe configs shrunk to it."""

from pathlib import Path

import pytest
import yaml

from jaxevo.config import load_config, to_dict
from jaxevo.evolve.config import EvolveConfig
from jaxevo.models.config import ModelConfig

ROOT = Path(__file__).resolve().parents[2]

# Small enough that two rounds of a recipe take well under a minute on 2 cores.
SHRINK = [
    "run.rounds=2", "run.progress=false",
    "prompts.per_round=6", "sample.n=2", "sample.max_new_tokens=12", "sample.batch_size=16",
    "feedback.max_new_tokens=8", "refine.max_new_tokens=12",
    "eval.source.n=6", "eval.max_new_tokens=12", "eval.batch_size=16",
    # A random model never writes a well-formatted answer: accept everything so training runs.
    "select.min_score=0.0", "select.require_format=false", "select.allow_truncated=true",
]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    from jaxevo.weights.load import load_tokenizer
    from jaxevo.weights.embedded import resolve_embedded
    from jaxevo.weights.hf import export_hf
    from tests.conftest import random_params

    tok = load_tokenizer(resolve_embedded("smollm2-135m-instruct"))
    cfg = ModelConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_layers=2,
                      num_heads=4, num_kv_heads=2, head_dim=8, max_position_embeddings=1024,
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    d = tmp_path_factory.mktemp("tiny_model")
    export_hf(random_params(cfg), cfg, d, tokenizer=tok)
    return str(d)


def recipe(name: str, run_dir, model: str, *extra: str) -> tuple[EvolveConfig, dict]:
    path = ROOT / "configs" / f"{name}.yaml"
    # The second held-out set (the demo's unseen phrasings) shrunk like the first.
    has_unseen = (yaml.safe_load(path.read_text()).get("eval") or {}).get("unseen_source")
    unseen = ["eval.unseen_source.n=6"] if has_unseen else []
    overrides = [f"run.dir={run_dir}", f"model.path={model}", *SHRINK, *unseen, *extra]
    cfg = load_config(EvolveConfig, path, overrides)
    return cfg, to_dict(cfg)
