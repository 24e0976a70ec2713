"""Tiny models, a character tokenizer and toy data sets for the trainer tests (no downloads)."""

from __future__ import annotations

import functools
import json
import string
from pathlib import Path

import jax
import jax.numpy as jnp
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from jaxevo.models.config import ModelConfig
from jaxevo.models.transformer import Transformer
from jaxevo.sharding import make_mesh, param_shardings
from jaxevo.train.batches import BatchStream, tokenize_views
from jaxevo.train.builder import build_step
from jaxevo.train.config import ObjectiveSection, OptimSection, TrainConfig
from jaxevo.train.reference import attach_reference, compute_reference_logps
from jaxevo.train.state import init_state
from jaxevo.weights.hf import export_hf
from jaxevo.weights.load import Pretrained
from tests.model_params import init_params

CHARS = string.ascii_letters + string.digits + " .,:;!?+-*/=()\n'\"#<>|_"
SPECIAL = ["<pad>", "<eos>", "<unk>"]
TINY_HF = dict(model_type="llama", architectures=["LlamaForCausalLM"], vocab_size=128,
               hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-6,
               tie_word_embeddings=False, eos_token_id=1, pad_token_id=0, bos_token_id=None)


def char_tokenizer():
    """A transformers PreTrainedTokenizerFast over single characters (vocab < 128, no template)."""
    vocab = {t: i for i, t in enumerate(SPECIAL + list(CHARS))}
    assert len(vocab) <= 128
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>")


def tiny_cfg(**runtime) -> ModelConfig:
    return ModelConfig.from_hf(TINY_HF, **runtime)


def tiny_params(cfg: ModelConfig, seed: int = 0):
    return init_params(cfg, seed)


def write_tiny_model(directory: Path, seed: int = 0) -> Path:
    """A HF-format directory (config.json, safetensors, tokenizer) of a random tiny Llama."""
    cfg = tiny_cfg()
    export_hf(tiny_params(cfg, seed), cfg, directory, tokenizer=char_tokenizer())
    return Path(directory)


def sft_records(n: int = 16):
    """Deterministic toy task: echo a word reversed."""
    words = ["cat", "dog", "bird", "fish", "lion", "bear", "wolf", "frog", "duck", "goat",
             "mole", "seal", "crab", "moth", "hare", "lynx", "orca", "puma", "newt", "toad"]
    return [{"prompt": f"rev {w}", "response": w[::-1]} for w in words[:n]]


def pref_records(n: int = 8):
    words = ["cat", "dog", "bird", "fish", "lion", "bear", "wolf", "frog", "duck", "goat",
             "mole", "seal"]
    return [{"prompt": f"say {w}", "chosen": f"{w} yes", "rejected": f"{w} no!"} for w in words[:n]]


def write_jsonl(path: Path, rows) -> Path:
    path = Path(path)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def pretrained(seed: int = 0, **runtime):
    """An in-memory `Pretrained` (tiny random Llama + char tokenizer)."""
    cfg = tiny_cfg(**runtime)
    return Pretrained(cfg=cfg, params=tiny_params(cfg, seed), tokenizer=char_tokenizer(), path=None)


def make_step(objective_name: str, records, *, num_micro: int = 1, batch_size: int = 8,
              mesh=None, optim=None, objective_kw=None, seed: int = 0, dtype: str = "float32",
              max_length: int = 32):
    """(step_fn, state, stream) from the builder's `build_step`, as `jaxevo.train.loop.train`
    builds them (reference log-probs precomputed when the objective needs them)."""
    mesh = mesh if mesh is not None else make_mesh((1, -1, 1))
    pre = pretrained(seed, dtype=dtype)
    cfg = TrainConfig(
        batch_size=batch_size, micro_batch_size=batch_size // num_micro, seed=seed,
        objective=ObjectiveSection(name=objective_name, **(objective_kw or {})),
        optim=optim or OptimSection(lr=1e-2, schedule="constant", clip_norm=None))
    parts = build_step(cfg, pre.cfg, mesh, jax.eval_shape(lambda: pre.params), 100)
    data = tokenize_views(records, parts.objective.views, pre.tokenizer, max_length=max_length,
                          chat_template=False, pad_to_multiple=8)
    p_sh = param_shardings(pre.cfg, mesh)
    params = jax.device_put(pre.params, p_sh)
    if parts.needs_reference:
        ref = compute_reference_logps(params, pre.cfg, data, parts.objective.view_names, mesh=mesh,
                                      param_shardings=p_sh, batch_size=8, pad_to_multiple=8)
        data = attach_reference(data, ref)
    state = init_state(params, parts.tx, 0, parts.state_shardings)
    return parts.step, state, BatchStream(data, batch_size, seed=seed, pad_to_multiple=8)


def label_logps(params, cfg: ModelConfig, tokens, labels) -> "np.ndarray":
    """[N] summed log-probs of the labelled tokens (labels >= 0; label t is predicted at t) of
    each row of ``tokens`` [N, T]: one plain causal forward, independent of the trainer's code."""
    import numpy as np

    return np.asarray(_label_logps(params, cfg, jnp.asarray(tokens), jnp.asarray(labels)))


@functools.partial(jax.jit, static_argnums=1)
def _label_logps(params, cfg, tokens, labels):
    t = tokens.shape[1]
    mask = jnp.tril(jnp.ones((t, t), bool))[None]
    logits, _ = Transformer(cfg).apply({"params": params}, tokens, jnp.arange(t)[None], mask)
    logits = logits.astype(jnp.float32)
    picked = jnp.take_along_axis(logits, jnp.maximum(labels, 0)[..., None], -1)[..., 0]
    lp = picked - jax.nn.logsumexp(logits, -1)
    return jnp.where(labels >= 0, lp, 0.0).sum(-1)
