"""Online RL on the trainer: sampled completions as a train `Batch`, the `policy` objective, and
the per-token log-probs of a batch under any params (old and reference log-probs).

    batch = rollout_batch(prompt_ids, completion_ids, advantages)    # host numpy Batch
    lp = token_logps_fn(cfg, mesh)(params, global_batch)             # [B, T] f32, on device

A rollout batch has one view, ``completion`` (prompt ⊕ completion tokens, labels on the completion
tokens only, so ``labels >= 0`` is TRL's ``completion_mask``), and the extras ``advantage`` [B],
optionally ``old_token_lp`` / ``ref_token_lp`` [B, T] aligned with the labels. The completion
tokens are the sampler's own ids (never re-tokenised text), as TRL trains on ``completion_ids``.
The `policy` objective (registered here) is `jaxevo.losses.policy_loss` on that batch; it goes
through the one train step (`train/step.py`) like every other objective. Rows whose advantages
are all 0 have no gradient without a KL term: `micro_order` gathers them into the last
micro-batches and the step skips those (`Objective.inert`).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxevo.errors import ConfigError
from jaxevo.losses import policy_loss
from jaxevo.models.config import ModelConfig
from jaxevo.sharding import use_mesh
from jaxevo.train.batches import Batch
from jaxevo.train.objectives import LossInputs, Metrics, Objective, register_objective
from jaxevo.train.step import batch_spec_sharding, forward_views

VIEW = "completion"
# hparams of the `policy` objective (ObjectiveSection.hparams), passed to `policy_loss`
POLICY_HPARAMS = ("epsilon_low", "epsilon_high", "importance_sampling_level", "delta",
                  "use_bias_correction_kl", "max_completion_length")


def rollout_batch(prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]],
                  advantages: Any, *, pad_to_multiple: int = 64) -> Batch:
    """A host `Batch` of B sampled sequences (see the module doc).

    Args:
      prompt_ids: B prompt token lists (what the sampler prefilled).
      completion_ids: B completion token lists (what it sampled, stop token included).
      advantages: [B] one advantage per completion.
      pad_to_multiple: the length T is the longest prompt ⊕ completion rounded up to this.

    Returns: a `Batch` with view ``completion`` ([B, T] tokens, labels, segments, positions) and
    extras ``advantage`` [B] f32.
    """
    b = len(prompt_ids)
    lens = [len(p) + len(c) for p, c in zip(prompt_ids, completion_ids)]
    m = max(1, int(pad_to_multiple))
    t = -(-max(max(lens, default=1), 2) // m) * m
    tokens = np.zeros((b, t), np.int32)
    labels = np.full((b, t), -1, np.int32)
    segments = np.zeros((b, t), np.int32)
    for i, (p, c) in enumerate(zip(prompt_ids, completion_ids)):
        if not p:
            raise ValueError(f"rollout_batch: row {i} has an empty prompt (the first completion token needs one)")
        seq = list(p) + list(c)
        tokens[i, : len(seq)] = seq
        segments[i, : len(seq)] = 1
        # hidden[t] predicts tokens[t + 1]: the completion's tokens are predicted from t = len(p) - 1
        labels[i, len(p) - 1 : len(seq) - 1] = c
    positions = np.broadcast_to(np.arange(t, dtype=np.int32), (b, t)).copy() * (segments > 0)
    view = {"tokens": tokens, "labels": labels, "segments": segments, "positions": positions}
    return Batch(views={VIEW: view}, extras={"advantage": np.asarray(advantages, np.float32).reshape(b)})


def group_batch(prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]],
                advantages: Any, per_row: int, *, pad_to_multiple: int = 64) -> Batch:
    """A host `Batch` of R rows, each one prompt and `per_row` (K) of its completions: the prompt
    is run once for K completions instead of K times (`grpo.share_prompt`).

    A row holds the prompt but its last token (segment -1: every later token of the row sees it),
    then for each completion i (segment i + 1) the prompt's last token and the completion, at the
    positions that follow the prompt's; labels on the completion tokens. A completion sees the
    prompt and itself only (`models.transformer.causal_mask`), so its log-probs are those of the
    row prompt ⊕ completion of `rollout_batch`; the attention runs over the whole row, though
    (W² scores a layer against K·T²): worth it while completions are short.

    Args:
      prompt_ids: R prompt token lists, one per row.
      completion_ids: R·K completion token lists, row after row.
      advantages: [R·K] one advantage per completion.
      per_row: K.
      pad_to_multiple: the row length W and the completion length C are rounded up to this.

    Returns: view ``completion`` [R, W]; extras ``advantage`` [R, K] f32 and ``columns``
    [R, K, C] int32, the row column holding completion i's j-th label (-1 past its end), which
    the `policy` objective reads the token log-probs at.
    """
    g, p_n = int(per_row), len(prompt_ids)
    if g < 1 or len(completion_ids) != p_n * g:
        raise ValueError(f"group_batch: {len(completion_ids)} completions for {p_n} prompts x {g}")
    m = max(1, int(pad_to_multiple))
    up = lambda n: -(-max(n, 1) // m) * m  # noqa: E731
    lens = [len(p) + sum(1 + len(c) for c in completion_ids[k * g:(k + 1) * g]) - 1
            for k, p in enumerate(prompt_ids)]
    w, c_len = up(max(lens, default=1)), up(max((len(c) for c in completion_ids), default=1))
    tokens = np.zeros((p_n, w), np.int32)
    labels = np.full((p_n, w), -1, np.int32)
    segments = np.zeros((p_n, w), np.int32)
    positions = np.zeros((p_n, w), np.int32)
    columns = np.full((p_n, g, c_len), -1, np.int32)
    for k, p in enumerate(prompt_ids):
        if not p:
            raise ValueError(f"group_batch: row {k} has an empty prompt (the first completion token needs one)")
        n = len(p) - 1
        tokens[k, :n], segments[k, :n], positions[k, :n] = p[:-1], -1, np.arange(n)
        at = n
        for i, c in enumerate(completion_ids[k * g:(k + 1) * g]):
            seq = [p[-1], *c]
            span = slice(at, at + len(seq))
            tokens[k, span], segments[k, span] = seq, i + 1
            positions[k, span] = np.arange(n, n + len(seq))
            labels[k, at:at + len(c)] = c  # the token at column t predicts the one at t + 1
            columns[k, i, :len(c)] = np.arange(at, at + len(c))
            at += len(seq)
    view = {"tokens": tokens, "labels": labels, "segments": segments, "positions": positions}
    adv = np.asarray(advantages, np.float32).reshape(p_n, g)
    return Batch(views={VIEW: view}, extras={"advantage": adv, "columns": columns})


def refuse_windowed_rows(cfg: ModelConfig, per_row: int, key: str) -> None:
    """ConfigError (naming the setting ``key``) when rows of ``per_row`` > 1 completions
    (`group_batch`) meet sliding-window layers: their window is counted in a row's slots, so it
    would reach across the row's other completions instead of back into the prompt."""
    if per_row > 1 and cfg.sliding_window and any(cfg.sliding_layers):
        raise ConfigError(f"{key}={per_row}: the model has sliding-window layers, whose window a row of "
                          f"several completions would not keep; set {key}: 1")


def update_batch(prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]],
                 advantages: Any, *, per_row: int = 1, num_micro: int = 1, gather_inert: bool = True,
                 pad_to_multiple: int = 64) -> Batch:
    """An online update's host `Batch`: `rollout_batch` rows (``per_row`` 1) or `group_batch`
    rows of one prompt and ``per_row`` of its completions, in the order of `micro_order` when
    ``gather_inert`` (rows whose advantages are all 0 in the last micro-batches, which the step
    skips; only right without a KL term).

    prompt_ids: B prompt token lists, one per completion (the ``per_row`` completions of a row
    share theirs); completion_ids: B; advantages: [B].
    """
    k = int(per_row)
    adv = np.asarray(advantages, np.float32).reshape(-1, k)
    order = (micro_order(np.any(adv != 0, axis=1), num_micro) if gather_inert
             else np.arange(adv.shape[0]))
    comps = [completion_ids[j * k + i] for j in order for i in range(k)]
    prompts = [prompt_ids[j * k] for j in order]
    if k == 1:
        return rollout_batch(prompts, comps, adv[order, 0], pad_to_multiple=pad_to_multiple)
    return group_batch(prompts, comps, adv[order].reshape(-1), k, pad_to_multiple=pad_to_multiple)


def per_completion(inp: LossInputs) -> tuple[jax.Array, jax.Array, jax.Array | None, jax.Array | None, jax.Array]:
    """(token log-probs, mask, old, reference [b, C], advantage [b]) of a micro-batch's
    completions: its rows as they are, or a `group_batch`'s rows [r, W] read at their
    ``columns`` [r, K, C] (b = r·K)."""
    lp, mask = inp.token_lp[VIEW], inp.masks[VIEW]
    old, ref = inp.extras.get("old_token_lp"), inp.extras.get("ref_token_lp")
    adv = inp.extras["advantage"]
    cols = inp.extras.get("columns")
    if cols is None:
        return lp, mask, old, ref, adv
    r, g, c = cols.shape
    at = jnp.maximum(cols, 0).reshape(r, g * c)
    read = lambda x: None if x is None else jnp.where(  # noqa: E731
        cols >= 0, jnp.take_along_axis(x, at, axis=1).reshape(r, g, c), 0.0).reshape(r * g, c)
    return read(lp), (cols >= 0).reshape(r * g, c), read(old), read(ref), adv.reshape(r * g)


def token_logps_fn(cfg: ModelConfig, mesh, *, chunk: int = 128, vocab_chunk: int | None = None):
    """``fn(params, batch) -> [B, T] f32`` token log-probs of the ``completion`` view (0 off the
    completion), laid out like the batch: what `policy` reads as old or reference log-probs."""
    out_sh = batch_spec_sharding(mesh)

    @jax.jit
    def run(params, views):
        out = forward_views(jax.lax.stop_gradient(params), cfg, views, (VIEW,), chunk=chunk,
                            vocab_chunk=vocab_chunk)
        return jax.lax.with_sharding_constraint(out[VIEW][0], out_sh)

    def call(params, batch: Batch) -> jax.Array:
        with use_mesh(mesh):
            return run(params, batch.views)
    call.jitted = run  # `jaxevo plan` lowers it on abstract shapes
    return call


def with_extras(batch: Batch, **extras: jax.Array) -> Batch:
    """The batch with more (device) extras."""
    return batch.replace(extras={**batch.extras, **extras})


def _policy(inp: LossInputs, hp) -> tuple[jax.Array, Metrics]:
    """One micro-batch's share of the global policy loss (exact under gradient accumulation:
    grpo/dr_grpo divide by the global number of sequences, the token-normalised types by the
    global number of completion tokens)."""
    if "advantage" not in inp.extras:
        raise ConfigError("objective `policy` needs a numeric `advantage` on every record (the online "
                          "stage `grpo` computes them; a JSONL for `jaxevo train` must carry them)")
    lp, mask, old, ref, adv = per_completion(inp)
    mask = mask.astype(jnp.float32)
    kw = {k: v for k, v in hp.hparams.items() if k in POLICY_HPARAMS}
    b = lp.shape[0]
    # a `group_batch` row holds K completions: the global number of sequences is rows x K
    per_row = b // inp.token_lp[VIEW].shape[0]
    n_tokens, n_seq = inp.norm[f"tokens/{VIEW}"], inp.norm["examples"] * per_row
    local_tokens = jnp.sum(mask)
    loss, m = policy_loss(hp.loss_type, lp, old, ref, adv, mask, beta=hp.beta,
                          num_items_in_batch=n_tokens, **kw)
    if hp.loss_type in ("grpo", "dr_grpo"):
        loss = loss * b / n_seq
    elif hp.loss_type == "bnpo":
        loss = loss * jnp.maximum(local_tokens, 1.0) / jnp.maximum(n_tokens, 1.0)
    # (dapo, cispo: already divided by the global token count)
    seq_level = kw.get("importance_sampling_level", "token") == "sequence"
    metrics: Metrics = {}
    for name, value in m.items():
        if name.endswith(("_min", "_max")):
            continue  # not summable over micro-batches
        count = jnp.asarray(b, jnp.float32) if (seq_level and name.startswith("clip")) else local_tokens
        metrics[name] = (jax.lax.stop_gradient(value) * count, count)
    return loss, metrics


def _inert(extras, hp) -> jax.Array | None:
    """Rows whose advantages are all 0 have a zero policy gradient (every clipped term is
    0 · ratio) unless a KL term pulls them to the reference."""
    if hp.beta or "advantage" not in extras:
        return None
    return jnp.all(extras["advantage"] == 0)


def micro_order(active: Sequence[bool] | np.ndarray, num_micro: int) -> np.ndarray:
    """A row order for a batch split into `num_micro` strided micro-batches (micro-batch j = rows
    j, j + n, j + 2n, ...; `train.step`) that gathers the rows that are not `active` (a zero
    advantage) into the last micro-batches, which the step then skips (`Objective.inert`).

    Returns ``perm`` [B]: batch row i holds row ``perm[i]``. The identity when every row is active
    or none is, or with one micro-batch: nothing to gather.
    """
    active = np.asarray(active, bool)
    b = active.size
    if num_micro <= 1 or b % num_micro or active.all() or not active.any():
        return np.arange(b)
    mb = b // num_micro
    ordered = np.concatenate([np.flatnonzero(active), np.flatnonzero(~active)])
    k = np.arange(b)
    perm = np.empty(b, np.int64)
    perm[(k % mb) * num_micro + k // mb] = ordered  # the k-th goes to micro-batch k // mb
    return perm


register_objective(Objective(
    name="policy",
    fields=("prompt", "completion"),
    views=((VIEW, lambda r, t: r["prompt"], lambda r: r["completion"]),),
    loss=_policy,
    token_level=False,
    optional_fields=("advantage",),
    inert=_inert,
))
