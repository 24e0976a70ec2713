"""The one train step every objective uses.

    step(state, batch) -> (state, metrics)

1. The global batch [B, ...] is split into ``num_micro`` micro-batches (strided, so each stays
   spread over the batch-sharded devices) and scanned with `lax.scan`; gradients accumulate in fp32.
2. Per micro-batch, all of the objective's views (e.g. chosen and rejected) are concatenated along
   the batch axis and run through the model **once** (``return_hidden=True``); token log-probs are
   computed in sequence (and optionally vocabulary) chunks from the hidden states and the LM head
   (`jaxevo.losses.token_logprobs`), never as full fp32 [B, T, V] logits.
3. The objective maps per-sequence log-prob sums / token log-probs to this micro-batch's share of
   the global loss plus (sum, count) metrics; reference log-probs come from the batch
   (``ref/<view>``, precomputed once) unless the step was built with a reference forward. With
   ``objective.token_alpha`` every sum is ω-weighted (ω: the step's replicated argument).
   A micro-batch the objective calls inert (`Objective.inert`: its gradient is 0 whatever the
   parameters, e.g. rollouts whose advantages are all 0) skips its forward and backward.
4. AdamW update; if the loss, the gradient norm or the new parameters are not finite the update is
   *skipped* (state returned unchanged) and ``metrics["finite"]`` is 0 — the loop raises.

The step is `jax.jit`-ed with in/out shardings from the logical-axis rules and the state donated.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxevo.lora import LoraSection
from jaxevo.lora.quantize import model_variables
from jaxevo.losses import token_logprobs
from jaxevo.losses.token_frequency import weighted_logps
from jaxevo.models.config import ModelConfig
from jaxevo.models.layers import gathered
from jaxevo.models.lowrank import LoraSpec
from jaxevo.models.transformer import LORA_DROPOUT, Transformer, causal_mask, lm_head_weight
from jaxevo.sharding import use_mesh
from jaxevo.train.objectives import LossInputs, Objective
from jaxevo.train.precision import compute_copy, rounding_key
from jaxevo.train.score_head import score_inputs
from jaxevo.train.state import TrainState

_DROPOUT_SALT = 0x6C64726F  # "ldro": LoRA dropout's stream of the step's key, apart from others

BATCH_AXES = ("data", "fsdp")


def batch_spec_sharding(mesh) -> NamedSharding:
    """Leading (example) axis over data x fsdp; works for [B] and [B, T] arrays alike."""
    return NamedSharding(mesh, P(BATCH_AXES))


def forward_views(params, cfg: ModelConfig, views: dict[str, dict[str, jax.Array]],
                  names: tuple[str, ...], *, chunk: int = 128, vocab_chunk: int | None = None,
                  lora: tuple | None = None, omega: jax.Array | None = None):
    """One forward over all ``names`` views (concatenated on the batch axis).

    ``params`` may hold quantised projections (QLoRA's base, `jaxevo.lora.quantize`); ``lora``:
    ``(LoraSpec, adapters, dropout key or None)`` applies the adapters factorised in the layers.
    ``omega`` [V] f32: per-token weights, so ``sum`` is ``Σ_t ω(y_t) log π(y_t)`` (DPSE's
    token-frequency reading, `jaxevo.losses.token_frequency`); ``token_lp`` stays unweighted.
    Returns ``{view: (token_lp [b, T] f32, mask [b, T] bool, sum [b] f32, count [b] f32)}``.
    """
    cat = {k: jnp.concatenate([views[v][k] for v in names], axis=0)
           for k in ("tokens", "labels", "segments", "positions")}
    seg = cat["segments"]
    mask = causal_mask(seg != 0, seg)  # each layer applies its own sliding window
    spec, adapters, key = lora if lora is not None else (None, None, None)
    rngs = {LORA_DROPOUT: key} if key is not None else {}
    hidden, _ = Transformer(cfg, spec).apply(model_variables(params, adapters), cat["tokens"],
                                             cat["positions"], mask, return_hidden=True, rngs=rngs)
    w = gathered(lm_head_weight(params, cfg), ("embed", "vocab"), hidden.dtype)  # see layers._weight
    tlp = token_logprobs(hidden, w, cat["labels"], chunk_size=chunk, vocab_chunk_size=vocab_chunk,
                         softcap=cfg.final_logit_softcap)
    lmask = cat["labels"] >= 0
    if omega is None:
        sums = jnp.sum(jnp.where(lmask, tlp, 0.0), axis=-1)
    else:
        sums = weighted_logps(tlp, cat["labels"], omega)
    counts = jnp.sum(lmask, axis=-1).astype(jnp.float32)
    b = views[names[0]]["tokens"].shape[0]
    out = {}
    for i, v in enumerate(names):
        s = slice(i * b, (i + 1) * b)
        out[v] = (tlp[s], lmask[s], sums[s], counts[s])
    return out


def idle_inputs(micro, names: tuple[str, ...], norm) -> LossInputs:
    """The `LossInputs` of a micro-batch whose forward is skipped: every log-prob 0, the masks
    and counts of its labels (an inert micro-batch's loss and metrics; `Objective.inert`)."""
    masks = {v: micro.views[v]["labels"] >= 0 for v in names}
    return LossInputs(
        logps={v: jnp.zeros(m.shape[:1], jnp.float32) for v, m in masks.items()},
        counts={v: jnp.sum(m, axis=-1).astype(jnp.float32) for v, m in masks.items()},
        token_lp={v: jnp.zeros(m.shape, jnp.float32) for v, m in masks.items()},
        masks=masks, ref={},
        extras={k: x for k, x in micro.extras.items() if not k.startswith("ref/")}, norm=norm)


def _split_micro(x: jax.Array, n: int, constrain: NamedSharding | None) -> jax.Array:
    """[B, ...] -> [n, B/n, ...] with micro-batch j = rows j, j+n, j+2n, ... (stays spread)."""
    b = x.shape[0]
    y = x.reshape(b // n, n, *x.shape[1:]).swapaxes(0, 1)
    if constrain is not None:
        y = jax.lax.with_sharding_constraint(y, constrain)
    return y


def make_train_step(
    cfg: ModelConfig,
    objective: Objective,
    hp: Any,
    tx: optax.GradientTransformation,
    schedule: Callable[[Any], Any],
    *,
    mesh,
    state_shardings: TrainState,
    num_micro: int = 1,
    chunk: int = 128,
    vocab_chunk: int | None = None,
    ref_forward: bool = False,
    ref_cfg: ModelConfig | None = None,
    ref_shardings: Any = None,
    lora: LoraSection | None = None,
    base_shardings: Any = None,
    rounding: str = "nearest",
    seed: int = 0,
    compiler_options: dict | None = None,
):
    """Build the jitted step ``step(state, batch[, ref_params, base_params, omega]) -> (state, metrics)``.

    ``metrics`` (all replicated scalars): ``loss``, ``grad_norm`` (before clipping), ``param_norm``,
    ``lr``, ``finite`` (1.0 when the update was applied) and, for every objective metric ``m``,
    ``m/sum`` and ``m/count`` (divide on the host: see `finalize_metrics`).
    ``ref_forward=True`` runs the frozen ``ref_params`` through ``ref_cfg`` every step instead of
    reading ``ref/<view>`` from the batch. ``rounding``: how the master weights become the compute
    copy the forward sees (`jaxevo.train.precision.compute_copy`; its bits from ``seed``).
    ``lora`` (enabled): ``state.params`` are the adapters only (gradients and optimizer state for
    them alone); the frozen ``base_params`` (possibly quantised: QLoRA) come as an argument and
    each adapted projection computes ``x·W + scale·dropout(x)·A·B`` inside the layers
    (`jaxevo.models.lowrank`), the dropout keyed by the state's RNG and the micro-batch. A
    reference forward then gets the base itself as ``ref_params`` (adapters off): no second
    model is held. ``hp.token_alpha`` set: the step takes ``omega`` [V] f32 (replicated; computed
    once from the whole training set by the builder, so micro-batching cannot change it) and
    every view's log-prob sum, policy and reference forward alike, is ω-weighted.
    ``compiler_options``: the jit's (`cpu_dots.compiler_options`: the CPU dot path).
    """
    names = objective.view_names
    weighted = getattr(hp, "token_alpha", None) is not None
    needs_ref = objective.needs_reference(hp)
    n_batch_dev = mesh.shape["data"] * mesh.shape["fsdp"]
    ref_cfg = ref_cfg or cfg
    lora = lora if lora is not None and lora.enabled else None
    spec = LoraSpec(lora.scale, lora.dropout) if lora is not None else None

    def loss_fn(params, micro, norm, ref_params, base, key, omega):
        adapted = None
        if lora is not None:  # LoRA hook: the adapters apply factorised inside the layers
            # The frozen base's compute copy (the same bits every step, so the same values; see
            # docs/lora.md for why it is not made once outside the step); the adapter branch runs
            # in f32 (`models.lowrank`): nothing of it is rounded.
            adapted = (spec, params, key if lora.dropout else None)
            params = compute_copy(jax.lax.stop_gradient(base), rounding, cfg.dtype,
                                  rounding_key(seed))
        if objective.reads == "score":  # a scalar head at each view's last token (reward model)
            return objective.loss(score_inputs(params, cfg, micro, names, norm), hp)
        out = forward_views(params, cfg, micro.views, names, chunk=chunk, vocab_chunk=vocab_chunk,
                            lora=adapted, omega=omega)
        if needs_ref and ref_forward:
            # Rounded like the policy's copy: the initial weights as reference give zero margin.
            ref_c = compute_copy(jax.lax.stop_gradient(ref_params), rounding, ref_cfg.dtype,
                                 rounding_key(seed))
            ref_out = forward_views(ref_c, ref_cfg, micro.views, names, chunk=chunk,
                                    vocab_chunk=vocab_chunk, omega=omega)
            ref = {v: jax.lax.stop_gradient(ref_out[v][2]) for v in names}
        elif needs_ref:
            ref = {v: micro.extras[f"ref/{v}"] for v in names}
        else:
            ref = {}
        inp = LossInputs(
            logps={v: o[2] for v, o in out.items()},
            counts={v: o[3] for v, o in out.items()},
            token_lp={v: o[0] for v, o in out.items()},
            masks={v: o[1] for v, o in out.items()},
            ref=ref,
            extras={k: x for k, x in micro.extras.items() if not k.startswith("ref/")},
            norm=norm,
        )
        loss, metrics = objective.loss(inp, hp)
        return loss, metrics

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    # an inert micro-batch's loss is taken from log-probs of 0: only where nothing else is read
    can_skip = (objective.inert is not None and objective.reads == "logprobs" and not needs_ref
                and not weighted)

    def step(state: TrainState, batch, ref_params=None, base_params=None, omega=None):
        if weighted and omega is None:  # at trace time: every caller (train, plan) must pass ω
            raise ValueError("objective.token_alpha is set: pass the token weights omega [V]")
        b = batch.size
        norm = {"examples": jnp.asarray(b, jnp.float32)}
        for v in names:
            norm[f"tokens/{v}"] = jnp.sum(batch.views[v]["labels"] >= 0).astype(jnp.float32)
        # The same copy for every micro-batch; its gradient is the master weights' (straight-through).
        # With LoRA the trained params are the adapters: loss_fn rounds the merged weights instead.
        params = state.params if lora is not None else compute_copy(state.params, rounding, cfg.dtype,
                                                                      rounding_key(seed))
        # LoRA dropout's key: the step's RNG (checkpointed: resume is bitwise), per micro-batch.
        step_key = jax.random.wrap_key_data(state.rng)
        drop_key = lambda j: jax.random.fold_in(jax.random.fold_in(step_key, _DROPOUT_SALT), j)  # noqa: E731

        def micro_grad(params, mbatch, j):
            """((loss part, metrics), grads) of one micro-batch; an inert one (see
            `Objective.inert`) skips the forward and backward: its gradient is exactly 0."""
            inert = objective.inert(mbatch.extras, hp) if can_skip else None
            computed = lambda _: grad_fn(params, mbatch, norm, ref_params, base_params,  # noqa: E731
                                         drop_key(j), omega)
            if inert is None:
                return computed(None)
            skipped = lambda _: (objective.loss(idle_inputs(mbatch, names, norm), hp),  # noqa: E731
                                 jax.tree.map(jnp.zeros_like, params))
            return jax.lax.cond(inert, skipped, computed, None)

        if num_micro == 1:
            (loss, metrics), grads = micro_grad(params, batch, 0)
            grads = jax.tree.map(lambda g: g.astype(jnp.float32), grads)
        else:
            mb = b // num_micro
            constrain = (NamedSharding(mesh, P(None, BATCH_AXES)) if mb % n_batch_dev == 0 else None)
            micro = jax.tree.map(lambda x: _split_micro(x, num_micro, constrain), batch)
            first = jax.tree.map(lambda x: x[0], micro)
            _, m_shape = jax.eval_shape(loss_fn, params, first, norm, ref_params,
                                        base_params, drop_key(0), omega)
            zeros_g = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params)
            zeros_m = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), m_shape)

            def body(carry, xs):
                g_acc, l_acc, m_acc = carry
                mbatch, j = xs
                (l, m), g = micro_grad(params, mbatch, j)
                g_acc = jax.tree.map(lambda a, x: a + x.astype(jnp.float32), g_acc, g)
                m_acc = jax.tree.map(jnp.add, m_acc, m)
                return (g_acc, l_acc + l, m_acc), None

            (grads, loss, metrics), _ = jax.lax.scan(
                body, (zeros_g, jnp.zeros((), jnp.float32), zeros_m),
                (micro, jnp.arange(num_micro)))

        grad_norm = optax.tree.norm(grads)
        grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, state.params)
        updates, new_opt = tx.update(grads, state.opt_state, state.params)
        new_params = optax.apply_updates(state.params, updates)
        param_norm = optax.tree.norm(new_params)
        ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(param_norm)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)
        rng, _ = jax.random.split(jax.random.wrap_key_data(state.rng))
        new_state = TrainState(
            step=state.step + ok.astype(jnp.int32),
            params=keep(new_params, state.params),
            opt_state=keep(new_opt, state.opt_state),
            rng=jnp.where(ok, jax.random.key_data(rng), state.rng),
        )
        out = {
            "loss": loss,
            "grad_norm": grad_norm,
            "param_norm": param_norm,
            "lr": jnp.asarray(schedule(state.step), jnp.float32),
            "finite": ok.astype(jnp.float32),
        }
        for k, (s, c) in metrics.items():
            out[f"{k}/sum"] = s
            out[f"{k}/count"] = c
        return new_state, out

    rep = NamedSharding(mesh, P())
    bsh = batch_spec_sharding(mesh)
    # Always five arguments, None where unused: the frozen base (LoRA, never donated) fourth,
    # the token weights ω (replicated: every device indexes the whole vocabulary) fifth.
    in_sh = (state_shardings, bsh, ref_shardings if ref_forward else None,
             base_shardings if lora is not None else None, rep if weighted else None)
    jitted = jax.jit(step, in_shardings=in_sh, out_shardings=(state_shardings, rep),
                     donate_argnums=(0,), compiler_options=compiler_options)

    def call(state, batch, ref_params=None, base_params=None, omega=None):
        with use_mesh(mesh):
            return jitted(state, batch, ref_params, base_params if lora is not None else None,
                          omega if weighted else None)

    call.jitted = jitted
    return call


def to_global(batch, mesh):
    """Host numpy batch (the same global batch on every process) -> global jax arrays laid out
    with the batch sharding; each process materialises only its addressable shards."""
    sh = batch_spec_sharding(mesh)

    def one(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sh, lambda idx: x[idx])
    return jax.tree.map(one, batch)


def fetch(tree):
    """Replicated device values -> numpy on this host (multi-process safe, unlike device_get)."""
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array)
                        else np.asarray(x), tree)


def finalize_metrics(raw: dict[str, Any]) -> dict[str, float]:
    """Host side: ``m/sum`` and ``m/count`` -> ``m`` (the mean over the whole global batch)."""
    out: dict[str, float] = {}
    for k, v in raw.items():
        if k.endswith("/sum"):
            name = k[: -len("/sum")]
            c = float(raw[f"{name}/count"])
            out[name] = float(v) / c if c else float("nan")
        elif not k.endswith("/count"):
            out[k] = float(v)
    return out
