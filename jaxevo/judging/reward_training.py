"""Training a reward model: Bradley–Terry on {"prompt", "chosen", "rejected"} records, as TRL's
RewardTrainer does, on one device (or replicated); export with `reward_model.export_reward_hf`.

    rm = reward_model_from_lm("smollm2-135m-instruct", dtype="float32")  # decoder + a fresh head
    rm, history = train_reward_model(rm, records, epochs=1, batch_size=8, lr=1e-5)
    export_reward_hf(rm.params, rm.cfg, "out/rm", rm.tokenizer, pad_token_id=rm.pad_token_id)

loss = -mean log sigmoid(r_chosen - r_rejected [- margin]) (+ `center_coef` * mean((r_c + r_r)^2),
TRL's `center_rewards_coefficient`); each step logs TRL's metric names: loss, accuracy (share of
pairs with r_chosen > r_rejected), margin (mean r_chosen - r_rejected), min_reward, mean_reward,
max_reward. What this trainer does not do (the `jaxevo train` engine does, for the LM objectives):
shard over a mesh, micro-batch, remat, checkpoint and resume.
"""

from __future__ import annotations

import random
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxevo.errors import ConfigError
from jaxevo.judging.reward_model import RewardModel
from jaxevo.models.reward import reward_logits
from jaxevo.sampling.params import length_bucket
from jaxevo.weights.load import load_pretrained

METRICS = ("loss", "accuracy", "margin", "min_reward", "mean_reward", "max_reward")


def bradley_terry_loss(r_chosen: jax.Array, r_rejected: jax.Array, margin: jax.Array | None = None,
                       center_coef: float | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """r_chosen, r_rejected (, margin) [B] -> (loss, TRL's metrics), as RewardTrainer.compute_loss."""
    diff = r_chosen - r_rejected
    loss = -jnp.mean(jax.nn.log_sigmoid(diff - (0.0 if margin is None else margin)))
    if center_coef:
        loss = loss + center_coef * jnp.mean((r_chosen + r_rejected) ** 2)
    both = jnp.concatenate([r_chosen, r_rejected])
    return loss, {"loss": loss, "accuracy": jnp.mean((diff > 0).astype(jnp.float32)), "margin": jnp.mean(diff),
                  "min_reward": jnp.min(both), "mean_reward": jnp.mean(both), "max_reward": jnp.max(both)}


def reward_model_from_lm(model: str, *, dtype: str = "float32", seed: int = 0, init_std: float = 0.02,
                         **kw) -> RewardModel:
    """A reward model to train: the decoder of causal LM `model` (its LM head dropped) and a new
    score head ~ N(0, init_std^2), transformers' initializer_range. pad id: the tokenizer's, else
    its eos (as TRL pads)."""
    pre = load_pretrained(model, dtype=dtype, param_dtype=dtype)
    decoder = {k: v for k, v in pre.params.items() if k != "lm_head"}
    head = init_std * jax.random.normal(jax.random.key(seed), (pre.cfg.hidden_size, 1), jnp.dtype(dtype))
    tok = pre.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    return RewardModel(pre.cfg.replace(tie_word_embeddings=True), {"decoder": decoder, "score": head}, tok,
                       pad_token_id=pad, **kw)


def _pad(seqs: Sequence[Sequence[int]], fill: int) -> tuple[np.ndarray, np.ndarray]:
    t = length_bucket(max(map(len, seqs)))
    tokens = np.full((len(seqs), t), fill, np.int32)
    valid = np.zeros((len(seqs), t), np.int32)
    for r, s in enumerate(seqs):
        tokens[r, :len(s)], valid[r, :len(s)] = s, 1
    return tokens, valid


def _step_fn(cfg, pad_token_id, tx, center_coef):
    def loss_fn(params, tokens, valid, margin):
        r = reward_logits(params, tokens, valid, cfg=cfg, pad_token_id=pad_token_id)[:, 0]
        b = tokens.shape[0] // 2
        return bradley_terry_loss(r[:b], r[b:], margin, center_coef)

    @jax.jit
    def step(params, opt_state, tokens, valid, margin):
        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, tokens, valid, margin)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics
    return step


def pair_ids(rm: RewardModel, records: Sequence[Mapping[str, Any]], max_length: int | None = None) -> list[tuple]:
    """(chosen ids, rejected ids, margin) per record, rendered as `rm` scores them; records longer
    than `max_length` tokens are dropped, as TRL filters them."""
    out = []
    for i, rec in enumerate(records):
        missing = [k for k in ("prompt", "chosen", "rejected") if k not in rec]
        if missing:
            raise ConfigError(f"reward-model data record {i} lacks {missing} (needs prompt, chosen, rejected)")
        c = rm.conversation_ids(rec["prompt"], rec["chosen"])
        r = rm.conversation_ids(rec["prompt"], rec["rejected"])
        if max_length is None or max(len(c), len(r)) <= max_length:
            out.append((c, r, float(rec.get("margin", 0.0))))
    return out


def train_reward_model(rm: RewardModel, records: Sequence[Mapping[str, Any]], *, epochs: int = 1,
                       batch_size: int = 8, lr: float = 1e-5, weight_decay: float = 0.0,
                       max_length: int | None = None, center_coef: float | None = None,
                       seed: int = 0) -> tuple[RewardModel, list[dict[str, float]]]:
    """Bradley–Terry training (AdamW, constant `lr`, shuffled each epoch with `seed`; a last
    partial batch is dropped). Returns the trained model and one metrics dict per step."""
    data = pair_ids(rm, records, max_length)
    if len(data) < batch_size:
        raise ConfigError(f"{len(data)} usable preference records for a batch of {batch_size}")
    fill = rm.pad_token_id if rm.pad_token_id is not None else 0
    tx = optax.adamw(lr, weight_decay=weight_decay)
    params, opt_state = rm.params, tx.init(rm.params)
    step = _step_fn(rm.cfg, rm.pad_token_id, tx, center_coef)
    history, rng = [], random.Random(seed)
    for _ in range(epochs):
        order = list(range(len(data)))
        rng.shuffle(order)
        for s in range(0, len(order) - batch_size + 1, batch_size):
            rows = [data[i] for i in order[s:s + batch_size]]
            tokens, valid = _pad([r[0] for r in rows] + [r[1] for r in rows], fill)
            margin = jnp.asarray([r[2] for r in rows], jnp.float32)
            params, opt_state, m = step(params, opt_state, jnp.asarray(tokens), jnp.asarray(valid), margin)
            history.append({k: float(m[k]) for k in METRICS})
    trained = RewardModel(rm.cfg, params, rm.tokenizer, pad_token_id=rm.pad_token_id, mesh=rm.mesh,
                          max_batch=rm.max_batch, max_length=rm.max_length)
    return trained, history

