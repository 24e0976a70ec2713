"""Scoring conversations with a reward model: a HF `LlamaForSequenceClassification` /
`MistralForSequenceClassification` / `Qwen2ForSequenceClassification` / `Qwen3ForSequenceClassification`
/ `Gemma3TextForSequenceClassification` checkpoint.

    rm = RewardModel.load("path/to/reward-model", dtype="float32")   # exact f32 scores
    rm.score(["What is 2+2?"], ["4."])                                 # [reward per completion]
    rm.score([[{"role": "user", "content": "Hi"}]], ["Hello!"])        # prompts as chat messages

The text scored is the conversation as TRL's RewardTrainer builds it: with a chat template, the
prompt as its user turn(s) (or messages) and the completion as the assistant turn, rendered by the
reward model's own template (`apply_chat_template`, no generation prompt); without one, prompt +
completion + eos, tokenised with the tokenizer's special tokens. Batches are sorted by length and
padded to a few bucket lengths (few compilations); on a mesh the weights load sharded as a
policy's do and the rows spread over the data axes, so a large reward model scores on the slice
that trains the policy.
"""

from __future__ import annotations

import contextlib
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxevo.data.conversation import Prompt, conversation_ids
from jaxevo.errors import ConfigError, WeightsError
from jaxevo.models.config import ModelConfig
from jaxevo.models.reward import reward_logits
from jaxevo.sampling.params import batch_bucket, length_bucket
from jaxevo.sampling.placement import rows_sharding
from jaxevo.sharding import use_mesh
from jaxevo.weights.reward_hf import export_reward_hf, load_reward

__all__ = ["RewardModel", "export_reward_hf", "score_records"]


class RewardModel:
    """cfg: the decoder's config (no LM head); params {"decoder", "score" [E, L]}; tokenizer: a
    transformers tokenizer; pad_token_id: the config's (what transformers reads the last token by).
    max_batch: rows per forward; max_length: longer conversations raise (no silent cut)."""

    def __init__(self, cfg: ModelConfig, params: Any, tokenizer: Any, *, pad_token_id: int | None,
                 mesh=None, max_batch: int = 16, max_length: int | None = None):
        self.cfg, self.params, self.tokenizer, self.mesh = cfg, params, tokenizer, mesh
        self.pad_token_id, self.max_batch = pad_token_id, max_batch
        self.max_length = max_length or cfg.max_position_embeddings

    @classmethod
    def load(cls, model: str, *, dtype: str = "bfloat16", mesh=None, **kw) -> "RewardModel":
        """Load a `*ForSequenceClassification` directory (or a jaxevo checkpoint of one, such as
        the output of `jaxevo train` with `objective.name: reward_model`)."""
        cfg, params, tok, pad = load_reward(model, dtype=dtype, mesh=mesh)
        return cls(cfg, params, tok, pad_token_id=pad, mesh=mesh, **kw)

    @property
    def num_labels(self) -> int:
        return int(self.params["score"].shape[1])

    # ------------------------------------------------------------------ text -> ids
    def conversation_ids(self, prompt: Prompt, completion: str) -> list[int]:
        """The token ids the reward model scores for one (prompt, completion), as TRL builds them
        (`jaxevo.data.conversation`; the `reward_model` train objective reads the same)."""
        return conversation_ids(self.tokenizer, prompt, completion)

    def score(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> list[float]:
        """One reward per (prompt, completion) [N], in input order."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts for {len(completions)} completions")
        return self.score_ids([self.conversation_ids(p, c) for p, c in zip(prompts, completions)])

    def score_ids(self, ids: Sequence[Sequence[int]], left_pad: bool = False) -> list[float]:
        """One reward per token sequence [N]; batches of `max_batch` rows, right-padded (or left)."""
        if self.num_labels != 1:
            raise WeightsError(f"a reward model has one label; this one has {self.num_labels} (num_labels)")
        return [float(x[0]) for x in self.logits_ids(ids, left_pad)]

    def logits_ids(self, ids: Sequence[Sequence[int]], left_pad: bool = False) -> np.ndarray:
        """The head's logits [N, L] f32 for each token sequence."""
        for i, s in enumerate(ids):
            if not 0 < len(s) <= self.max_length:
                raise WeightsError(f"conversation {i} has {len(s)} tokens; the reward model takes 1 to "
                                   f"{self.max_length} (max_length)")
        out = np.zeros((len(ids), self.num_labels), np.float32)
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        shards = 1 if self.mesh is None else self.mesh.shape["data"] * self.mesh.shape["fsdp"]
        fill = self.pad_token_id if self.pad_token_id is not None else 0
        for start in range(0, len(order), self.max_batch):
            rows = order[start:start + self.max_batch]
            b = batch_bucket(len(rows), shards, self.max_batch)
            t = min(length_bucket(len(ids[rows[0]])), self.max_length)
            tokens = np.full((b, t), fill, np.int32)
            valid = np.zeros((b, t), np.int32)
            for r, i in enumerate(rows):
                s = ids[i]
                sl = slice(t - len(s), t) if left_pad else slice(0, len(s))
                tokens[r, sl], valid[r, sl] = s, 1
            with self._mesh_ctx():
                logits = reward_logits(self.params, self._put(tokens), self._put(valid), cfg=self.cfg,
                                       pad_token_id=self.pad_token_id)
            out[rows] = np.asarray(jax.device_get(logits))[: len(rows)]
        return out

    def _put(self, x: np.ndarray):
        return jnp.asarray(x) if self.mesh is None else jax.device_put(x, rows_sharding(self.mesh, x.shape))

    def _mesh_ctx(self):
        return contextlib.nullcontext() if self.mesh is None else use_mesh(self.mesh)


def score_records(rm: Any, records: Sequence[Mapping[str, Any]], where: str = "input") -> list[dict]:
    """`jaxevo score --reward-model`'s rows: each record (`prompt` or `messages`, and `completions`,
    a list of strings, as `jaxevo generate` writes them) with `scores`, one reward per completion;
    every completion of every record in one `rm.score` call (it batches)."""
    prompts, completions, counts = [], [], []
    for i, rec in enumerate(records):
        prompt = rec.get("messages", rec.get("prompt"))
        comps = rec.get("completions")
        if prompt is None or not isinstance(comps, list) or not all(isinstance(c, str) for c in comps):
            raise ConfigError(f"{where} record {i}: needs 'prompt' (or 'messages') and 'completions', "
                              f"a list of strings (as `jaxevo generate` writes)")
        prompts += [prompt] * len(comps)
        completions += comps
        counts.append(len(comps))
    scores = rm.score(prompts, completions) if completions else []
    out, at = [], 0
    for rec, n in zip(records, counts):
        out.append({**rec, "scores": [float(x) for x in scores[at:at + n]]})
        at += n
    return out
