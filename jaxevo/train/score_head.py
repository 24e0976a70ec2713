"""Objectives that read a scalar head instead of log-probs (``Objective.reads == "score"``): a
reward model trained by `jaxevo train` with ``objective.name: reward_model``.

    params = {"decoder": decoder params (no LM head), "score": w [E, 1]}
    r = forward_scores(params, cfg, views, names)       # {view: ([b] f32 rewards, [b] tokens)}

The model is the reward model `jaxevo.models.reward` scores with: the decoder's hidden state at
each view's last real token that is not the pad id (transformers' rule) times the head, read by
the same `read_score`. A view is the conversation ``prompt -> response`` rendered as
`jaxevo.data.conversation.conversation_ids` renders it for scoring, so a model trained here scores
the same text afterwards (`RewardModel`, `jaxevo score --reward-model`). The starting point is a
causal LM (its LM head dropped, a fresh head ~ N(0, init_std^2), transformers' initializer range
0.02 by default) or a `*ForSequenceClassification` checkpoint (its head kept); the pad id is the
checkpoint's, else the tokenizer's, else its eos (as TRL pads). Pairs longer than
``data.max_length`` are dropped as TRL drops them (``data.truncation: error`` refuses them).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxevo.data.conversation import conversation_ids
from jaxevo.errors import ConfigError
from jaxevo.models.config import ModelConfig
from jaxevo.models.reward import read_score
from jaxevo.models.transformer import Transformer, causal_mask
from jaxevo.sharding import param_shardings
from jaxevo.train.batches import VIEW_KEYS, TokenizedData
from jaxevo.train.objectives import LossInputs
from jaxevo.weights.convert import abstract_params
from jaxevo.weights.load import Pretrained, load_pretrained
from jaxevo.weights.reward_hf import is_reward_checkpoint, load_reward

log = logging.getLogger(__name__)

INIT_STD = 0.02  # transformers' initializer_range: the fresh head's std


def check_config(cfg) -> None:
    """Settings a score objective cannot honour, refused before anything loads."""
    d = cfg.data
    if cfg.lora.enabled:
        raise ConfigError(f"lora.rank={cfg.lora.rank}: objective {cfg.objective.name!r} trains every "
                          "weight of the reward model (LoRA for a score head is not supported); set lora.rank=0")
    if d.system is not None or not d.chat_template:
        raise ConfigError(f"objective {cfg.objective.name!r} renders each pair as the reward model scores "
                          "it (its chat template, `jaxevo score --reward-model`): drop data.system and "
                          "data.chat_template=false; give a system turn in a record's `system` or `messages`")


# ----------------------------------------------------------------------------- params
def score_shardings(cfg: ModelConfig, mesh):
    """The decoder's shardings and a replicated head (it is [E, 1])."""
    return {"decoder": param_shardings(cfg, mesh), "score": NamedSharding(mesh, P())}


def abstract_score_params(cfg: ModelConfig, dtype) -> dict:
    """ShapeDtypeStructs of ``{"decoder", "score"}`` for a decoder config without LM head."""
    dec = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, dtype), abstract_params(cfg))
    return {"decoder": dec, "score": jax.ShapeDtypeStruct((cfg.hidden_size, 1), dtype)}


def decoder_config(cfg: ModelConfig, pad_token_id: int | None) -> ModelConfig:
    """A sequence classifier's decoder: no LM head; the pad id the score is read by."""
    return cfg.replace(tie_word_embeddings=True, pad_token_id=pad_token_id)


def _with_head(pre: Pretrained, seed: int, init_std: float) -> Pretrained:
    params = pre.params
    if "score" in params and "decoder" in params:  # already a reward model (in memory)
        return pre
    tok = pre.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    decoder = {k: v for k, v in params.items() if k != "lm_head"}
    dtype = jax.tree.leaves(decoder)[0].dtype
    head = init_std * jax.random.normal(jax.random.key(seed), (pre.cfg.hidden_size, 1), jnp.float32)
    return Pretrained(decoder_config(pre.cfg, pad), {"decoder": decoder, "score": head.astype(dtype)},
                      tok, pre.path)


def score_model(cfg, pretrained: Pretrained | None = None, mesh=None) -> Pretrained:
    """The reward model a `TrainConfig` starts from: ``pretrained`` (a causal LM or already
    ``{"decoder", "score"}``) or ``cfg.model.path`` (a `*ForSequenceClassification` keeps its head;
    a causal LM gets a fresh one, drawn from ``cfg.seed``)."""
    m = cfg.model
    init_std = float(cfg.objective.hparams.get("init_std", INIT_STD))
    if pretrained is not None:
        return _with_head(pretrained, cfg.seed, init_std)
    if is_reward_checkpoint(m.path):
        mcfg, params, tok, pad = load_reward(m.path, dtype=m.dtype, param_dtype=m.param_dtype,
                                             remat=m.remat, mesh=mesh)
        return Pretrained(decoder_config(mcfg, pad), params, tok, m.path)
    pre = load_pretrained(m.path, dtype=m.dtype, param_dtype=m.param_dtype, remat=m.remat, mesh=mesh)
    return _with_head(pre, cfg.seed, init_std)


# ----------------------------------------------------------------------------- data
def tokenize_conversations(records: Sequence[Mapping[str, Any]], view_specs, tok, data_cfg,
                           templates: Mapping[str, str]) -> tuple[TokenizedData, list]:
    """Every record's views as conversations (``context_fn`` the prompt, ``response_fn`` the
    reply), right-padded with 0 (the score reads `segments > 0`). Returns the data and the kept
    records (a pair with a view over ``max_length`` tokens is dropped, or refused with
    ``truncation: error``)."""
    rows, kept = [], []
    for i, r in enumerate(records):
        ids = [conversation_ids(tok, c(r, templates), f(r)) for _, c, f in view_specs]
        longest = max(map(len, ids))
        if longest > data_cfg.max_length:
            if data_cfg.truncation == "error":
                raise ConfigError(f"record {i}: a conversation of {longest} tokens > data.max_length="
                                  f"{data_cfg.max_length}; raise max_length, or set data.truncation=left "
                                  "to drop such pairs (as TRL's RewardTrainer does)")
            continue
        rows.append(ids)
        kept.append(r)
    dropped = len(records) - len(kept)
    if dropped:
        log.warning("dropped %d of %d pairs longer than data.max_length=%d tokens", dropped,
                    len(records), data_cfg.max_length)
    if not rows:
        raise ConfigError(f"every pair is longer than data.max_length={data_cfg.max_length} tokens")
    m = max(1, int(data_cfg.pad_to_multiple))
    longest = max(len(s) for ids in rows for s in ids)
    t = min(data_cfg.max_length, -(-longest // m) * m)
    arrays: dict[str, np.ndarray] = {}
    for v, (name, _, _) in enumerate(view_specs):
        a = {k: np.zeros((len(rows), t), np.int32) for k in VIEW_KEYS}
        a["labels"][:] = -1  # no token is predicted: the head reads the last one
        for i, ids in enumerate(rows):
            s = ids[v]
            a["tokens"][i, :len(s)] = s
            a["segments"][i, :len(s)] = 1
            a["positions"][i, :len(s)] = np.arange(len(s))
        arrays.update({f"{name}/{k}": x for k, x in a.items()})
    stats = {"examples": len(rows), "dropped_too_long": dropped}
    return TokenizedData(arrays, tuple(n for n, _, _ in view_specs), stats), kept


# ----------------------------------------------------------------------------- forward
def forward_scores(params, cfg: ModelConfig, views: Mapping[str, Mapping[str, jax.Array]],
                   names: tuple[str, ...]) -> dict[str, tuple[jax.Array, jax.Array]]:
    """One forward over all ``names`` views (concatenated on the batch axis) ->
    ``{view: (score [b] f32, token count [b] f32)}``."""
    tokens = jnp.concatenate([views[v]["tokens"] for v in names], axis=0)
    seg = jnp.concatenate([views[v]["segments"] for v in names], axis=0)
    pos = jnp.concatenate([views[v]["positions"] for v in names], axis=0)
    valid = seg > 0
    hidden, _ = Transformer(cfg).apply({"params": params["decoder"]}, tokens, pos,
                                       causal_mask(valid, seg), return_hidden=True)
    r = read_score(hidden, tokens, valid, params["score"], cfg.dtype, cfg.pad_token_id)[:, 0]
    counts = jnp.sum(valid, axis=-1).astype(jnp.float32)
    b = views[names[0]]["tokens"].shape[0]
    return {v: (r[i * b:(i + 1) * b], counts[i * b:(i + 1) * b]) for i, v in enumerate(names)}


def score_inputs(params, cfg: ModelConfig, micro, names: tuple[str, ...], norm) -> LossInputs:
    """The `LossInputs` of one micro-batch for a score objective (no log-probs, no reference)."""
    out = forward_scores(params, cfg, micro.views, names)
    return LossInputs(logps={}, counts={v: o[1] for v, o in out.items()}, token_lp={}, masks={},
                      ref={}, extras={k: x for k, x in micro.extras.items() if not k.startswith("ref/")},
                      norm=norm, scores={v: o[0] for v, o in out.items()})
