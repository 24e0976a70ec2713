"""Build a trainer once: the train state, the step function, the batch stream, the checkpointer.

    parts = build_step(cfg, model_cfg, mesh, abstract_params, total)  # objective, optimizer, step
    trainer = build(cfg, pretrained=pre, records=rows)                 # everything `train` runs

`build_step` needs only shapes (`jax.ShapeDtypeStruct` params), so `jaxevo.plan` compiles the very
step `train` runs. `build` does the rest, in this order: mesh -> model (`load_pretrained`, straight
into its shardings) -> records -> views (tokenised, truncated, optionally packed) -> reference
log-probs once (objectives that need them; ω-weighted with ``objective.token_alpha``, ω counted
once over the whole data set) -> the step -> state (fresh, or restored from the
latest Orbax checkpoint in ``out_dir``, onto this run's mesh) -> the batch stream.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import numpy as np
import optax

from jaxevo.config import to_dict
from jaxevo.errors import ConfigError
from jaxevo.lora.adapters import abstract_adapters, adapter_shardings, init_adapters
from jaxevo.lora.peft import load_start
from jaxevo.lora.quantize import dequantize_base, frozen_base_shardings, quantize_base
from jaxevo.models.config import ModelConfig
from jaxevo.sharding import make_mesh, param_shardings
from jaxevo.train import cpu_dots, score_head
from jaxevo.train.batches import BatchStream, TokenizedData, pack, read_records, tokenize_views
from jaxevo.train.checkpoint import Checkpointer
from jaxevo.train.config import TrainConfig
from jaxevo.train.objectives import Objective, check_token_weights, get_objective
from jaxevo.train.optim import make_optimizer
from jaxevo.train.precision import compute_copy, rounding_key
from jaxevo.train.recorded_config import check_and_record, has_checkpoint, note_resume_step
from jaxevo.train.reference import (attach_reference, cached_reference_logps,
                                    compute_reference_logps, fingerprint, reference_model_id)
from jaxevo.train.state import TrainState, abstract_state, init_state, state_shardings
from jaxevo.train.step import fetch, make_train_step
from jaxevo.train.token_weights import data_token_weights, replicated
from jaxevo.weights.load import load_pretrained

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- the step
@dataclasses.dataclass(frozen=True)
class StepParts:
    """The objective, optimizer and jitted step of one phase (no arrays: built from shapes)."""

    objective: Objective
    needs_reference: bool  # the loss reads reference log-probs
    ref_forward: bool  # ... computed by a frozen reference forward inside every step
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    state_shardings: TrainState
    step: Callable  # step(state, batch, ref_params=None, base_params=None) -> (state, metrics)
    trainable: Any  # abstract tree of what the state trains: the params, or the LoRA adapters


def check_batch(cfg: TrainConfig, mesh) -> None:
    n = mesh.shape["data"] * mesh.shape["fsdp"]
    if cfg.batch_size % n:
        raise ConfigError(f"batch_size={cfg.batch_size} must be a multiple of the batch devices "
                          f"(data x fsdp = {n}) of mesh {dict(mesh.shape)}")


def build_step(cfg: TrainConfig, model_cfg: ModelConfig, mesh, abstract_params, total: int, *,
               ref_cfg: ModelConfig | None = None) -> StepParts:
    """Objective, optimizer (schedule over ``total`` steps), state shardings and the jitted step.

    ``abstract_params``: the params' shapes and dtypes (arrays or `jax.ShapeDtypeStruct`s);
    ``ref_cfg``: the reference model's config when it differs from ``model_cfg``.
    """
    check_batch(cfg, mesh)
    objective = get_objective(cfg.objective.name)
    check_objective(cfg, objective)
    needs_ref = objective.needs_reference(cfg.objective)
    ref_forward = needs_ref and not cfg.objective.precompute_ref
    ref_cfg = ref_cfg or model_cfg
    p_sh = model_shardings(objective, model_cfg, mesh)
    tx, schedule = make_optimizer(cfg.optim, total)
    trainable, t_sh, base_sh = abstract_params, p_sh, p_sh
    ref_sh = param_shardings(ref_cfg, mesh) if ref_forward else None
    if cfg.lora.enabled:  # LoRA hook: the state trains (and checkpoints) the adapters only
        trainable = abstract_adapters(cfg.lora, model_cfg)
        t_sh = adapter_shardings(cfg.lora, model_cfg, mesh)
        base_sh = frozen_base_shardings(cfg.lora, model_cfg, mesh, p_sh)  # QLoRA: quantised
        if ref_forward and not cfg.model.reference:  # the reference is the (quantised) base
            ref_sh = base_sh
    st_sh = state_shardings(t_sh, tx, trainable, mesh)
    step = make_train_step(
        model_cfg, objective, cfg.objective, tx, schedule, mesh=mesh, state_shardings=st_sh,
        num_micro=cfg.num_micro, chunk=cfg.logprob_chunk, vocab_chunk=cfg.vocab_chunk,
        ref_forward=ref_forward, ref_cfg=ref_cfg, ref_shardings=ref_sh,
        lora=cfg.lora, base_shardings=base_sh, rounding=cfg.model.rounding, seed=cfg.seed,
        compiler_options=cpu_dots.compiler_options(mesh, model_cfg.hidden_size, model_cfg.intermediate_size,
                                                   model_cfg.dtype))
    return StepParts(objective, needs_ref, ref_forward, tx, schedule, st_sh, step, trainable)


def check_objective(cfg: TrainConfig, objective: Objective) -> None:
    """The objective's own refusals (bad hyperparameters, settings it cannot honour)."""
    check_token_weights(cfg.objective, objective)
    objective.check(cfg.objective)
    if objective.reads == "score":
        score_head.check_config(cfg)


def model_shardings(objective: Objective, model_cfg: ModelConfig, mesh):
    """The params' shardings: the model's, or a reward model's decoder + replicated head."""
    if objective.reads == "score":
        return score_head.score_shardings(model_cfg, mesh)
    return param_shardings(model_cfg, mesh)


# ----------------------------------------------------------------------------- data
def prepare_data(cfg: TrainConfig, objective: Objective, tokenizer,
                 records: Sequence[dict] | None = None) -> TokenizedData:
    """The objective's views of ``records`` (default: read ``cfg.data.path``), tokenised."""
    d = cfg.data
    if records is None:
        records = read_records(d.path, objective.fields, d.limit, d.prompt_field)
    else:
        records = list(records)[: d.limit] if d.limit else list(records)
        for i, r in enumerate(records):
            missing = [k for k in objective.fields if not isinstance(r.get(k), str)]
            if missing:
                raise ConfigError(f"record {i}: missing or non-string field(s) {missing}; "
                                  f"objective {objective.name!r} needs {list(objective.fields)}")
    templates = {"refine_template": d.refine_template, "feedback_template": d.feedback_template}
    if objective.reads == "score":  # conversations as the reward model scores them
        data, records = score_head.tokenize_conversations(records, objective.views, tokenizer, d,
                                                          templates)
    else:
        data = _views(d, objective, tokenizer, records, templates)
    extras = {}
    for f in objective.optional_fields:
        if all(f in r for r in records):
            extras[f] = np.asarray([float(r[f]) for r in records], np.float32)
    if extras:
        data = data.with_extras(**extras)
    if d.packing:
        if not objective.token_level:
            raise ConfigError(f"data.packing=true needs a token-level objective (sft), "
                              f"not {objective.name!r}")
        data = pack(data, d.max_length, d.pad_to_multiple)
    return data


def _views(d, objective: Objective, tokenizer, records, templates) -> TokenizedData:
    return tokenize_views(records, objective.views, tokenizer, max_length=d.max_length,
                          truncation=d.truncation, chat_template=d.chat_template, system=d.system,
                          append_eos=d.append_eos, pad_to_multiple=d.pad_to_multiple,
                          templates=templates)


def total_steps(cfg: TrainConfig, num_examples: int) -> int:
    if cfg.steps is not None:
        return int(cfg.steps)
    return max(1, math.ceil(cfg.epochs * num_examples / cfg.batch_size))


# ----------------------------------------------------------------------------- the trainer
@dataclasses.dataclass(frozen=True)
class Trainer:
    """Everything the loop runs, built once by `build`."""

    cfg: TrainConfig
    mesh: Any
    model_cfg: ModelConfig
    tokenizer: Any
    objective: Objective
    state: TrainState  # fresh, or restored from `restored_step` (the step donates it)
    step: Callable  # step(state, global batch) -> (state, device metrics)
    stream: BatchStream  # stream.batch(s): the host batch of optimizer step s (deterministic)
    checkpointer: Checkpointer
    start: int  # optimizer steps already done (state.step)
    total: int  # optimizer steps of the whole phase (the schedule's length)
    restored_step: int | None  # the checkpoint resumed from, None for a fresh start
    stats: dict[str, Any]  # data statistics (+ reference_s)
    base: Any = None  # LoRA: the frozen base params (the state holds the adapters); else None

    def meta(self, step: int) -> dict[str, Any]:
        """What a checkpoint of ``step`` records besides the state (the data position: resume)."""
        c = self.cfg
        return {"step": step, "total_steps": self.total, "objective": self.objective.name,
                "data_position": {"examples_seen": step * c.batch_size, "batch_size": c.batch_size,
                                  "seed": c.seed, "num_examples": self.stream.data.num_examples},
                "config": to_dict(c)}


def build(cfg: TrainConfig, *, pretrained=None, records: Sequence[dict] | None = None,
          mesh=None) -> Trainer:
    """Set up the phase ``cfg`` describes; see the module doc. Arguments as `jaxevo.train.train`."""
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mesh = mesh if mesh is not None else make_mesh(cfg.mesh)
    check_batch(cfg, mesh)
    resuming = cfg.checkpoint.resume and has_checkpoint(out_dir)
    # Before the model loads: a refused config fails in a second, not after minutes of set-up.
    check_and_record(cfg, out_dir, resuming=resuming, defaults=TrainConfig(),
                     write=jax.process_index() == 0)
    objective = get_objective(cfg.objective.name)
    check_objective(cfg, objective)

    if objective.reads == "score":  # a reward model: the decoder and a score head, no LM head
        pretrained = score_head.score_model(cfg, pretrained, mesh)
    elif pretrained is None:
        pretrained = load_pretrained(cfg.model.path, dtype=cfg.model.dtype,
                                     param_dtype=cfg.model.param_dtype, remat=cfg.model.remat,
                                     mesh=mesh)
    mcfg, tokenizer = pretrained.cfg, pretrained.tokenizer
    p_sh = model_shardings(objective, mcfg, mesh)
    params = jax.device_put(pretrained.params, p_sh)
    del pretrained  # no second reference to the initial weights during training
    if cfg.lora.enabled and cfg.lora.quantize_base:  # QLoRA: the base is held quantised only
        p_sh = frozen_base_shardings(cfg.lora, mcfg, mesh, p_sh)
        params = quantize_base(params, cfg.lora.quantize_base, mcfg, p_sh)
    data = prepare_data(cfg, objective, tokenizer, records)
    stats = dict(data.stats, rows=data.num_examples, length=data.length)
    total = total_steps(cfg, data.num_examples)
    log.info("data: %s", stats)
    omega = None
    if cfg.objective.token_alpha is not None:  # ω once, from every trained token of the data set
        w = data_token_weights(data, objective.view_names, mcfg.vocab_size, cfg.objective.token_alpha)
        log.info("token weights ω (token_alpha=%s): min %.4g, max %.4g", cfg.objective.token_alpha,
                 float(w.min()), float(w.max()))
        omega = replicated(w, mesh)

    ref = _reference(cfg, objective, data, params, mcfg, mesh, in_memory=records is not None,
                     base_shardings=p_sh, omega=omega)
    data, ref_params = ref.data, ref.params
    if ref.seconds is not None:
        stats["reference_s"] = ref.seconds
    abstract_params = jax.eval_shape(lambda p: dequantize_base(p, mcfg), params)  # QLoRA: dense
    parts = build_step(cfg, mcfg, mesh, abstract_params, total, ref_cfg=ref.cfg)

    ckpt = Checkpointer(out_dir / "checkpoints", keep=cfg.checkpoint.keep)
    state, restored = _restore(cfg, ckpt, parts.trainable, parts)
    base = params if cfg.lora.enabled else None
    if state is None and base is not None:  # LoRA hook: fresh adapters (B = 0) or a PEFT start
        a_sh = parts.state_shardings.params
        adapters = (load_start(cfg.lora, mcfg, a_sh) if cfg.lora.init_from else
                    init_adapters(cfg.lora, mcfg, jax.random.key(cfg.seed), a_sh))
        state = init_state(adapters, parts.tx, cfg.seed, parts.state_shardings)
    elif state is None:
        state = init_state(params, parts.tx, cfg.seed, parts.state_shardings)
        if ref_params is not None and any(a is b for a, b in zip(jax.tree.leaves(state.params),
                                                                 jax.tree.leaves(ref_params))):
            ref_params = jax.tree.map(lambda x: x.copy(), ref_params)  # the state is donated
    del params
    step = parts.step
    if parts.ref_forward:
        step = functools.partial(step, ref_params=ref_params)
    if base is not None:
        step = functools.partial(step, base_params=base)
    if omega is not None:
        step = functools.partial(step, omega=omega)
    stream = BatchStream(data, cfg.batch_size, seed=cfg.seed, shuffle=cfg.data.shuffle,
                         pad_to_multiple=cfg.data.pad_to_multiple)
    return Trainer(cfg, mesh, mcfg, tokenizer, objective, state, step, stream, ckpt,
                   int(fetch(state.step)), total, restored, stats, base)


@dataclasses.dataclass(frozen=True)
class _Reference:
    data: TokenizedData  # with ``ref/<view>`` extras when precomputed
    params: Any  # reference weights for a per-step forward, else None
    cfg: ModelConfig
    seconds: float | None  # time spent precomputing (None: nothing precomputed)


def _reference(cfg: TrainConfig, objective: Objective, data: TokenizedData, params, mcfg, mesh, *,
               in_memory: bool, base_shardings=None, omega=None) -> _Reference:
    """Reference log-probs once (cached in ``out_dir``), or the weights for a per-step forward.
    ``omega``: the token weights; the precomputed sums are then ω-weighted like the policy's."""
    if not objective.needs_reference(cfg.objective):
        return _Reference(data, None, mcfg, None)
    # The reference runs on the compute copy the policy's first step sees (same rounding, same
    # bits), so with the initial weights as reference the first margin is exactly zero.
    rounding = cfg.model.rounding
    precision = cfg.model.dtype if rounding == "nearest" else f"{cfg.model.dtype}/{rounding}/{cfg.seed}"
    if cfg.model.reference:
        rp = load_pretrained(cfg.model.reference, dtype=cfg.model.dtype,
                             param_dtype=cfg.model.param_dtype, mesh=mesh)
        ref_params, ref_cfg = rp.params, rp.cfg
        ref_id = reference_model_id(cfg.model.reference, precision)
    else:
        # The initial weights are the reference. `init_state` copies them into the (donated)
        # state, so these arrays stay valid and unchanged.
        ref_params, ref_cfg = params, mcfg
        ref_id = reference_model_id("<in-memory>" if in_memory else cfg.model.path, precision)
    if not cfg.objective.precompute_ref:
        return _Reference(data, ref_params, ref_cfg, None)
    t0 = time.time()
    key = fingerprint(data, objective.view_names, ref_id,
                      None if omega is None else fetch(omega))
    copy = jax.jit(compute_copy, static_argnums=(1, 2))
    logps = cached_reference_logps(Path(cfg.out_dir) / "reference_logps.npz", key,
                                   lambda: compute_reference_logps(
        copy(ref_params, rounding, ref_cfg.dtype, rounding_key(cfg.seed)), ref_cfg, data,
        objective.view_names, mesh=mesh,
        param_shardings=(param_shardings(ref_cfg, mesh) if cfg.model.reference
                         else base_shardings), batch_size=cfg.objective.ref_batch_size,
        chunk=cfg.logprob_chunk, vocab_chunk=cfg.vocab_chunk,
        pad_to_multiple=cfg.data.pad_to_multiple, progress=cfg.log.progress, omega=omega))
    return _Reference(attach_reference(data, logps), None, ref_cfg, round(time.time() - t0, 3))


def _restore(cfg: TrainConfig, ckpt: Checkpointer, abstract_params,
             parts: StepParts) -> tuple[TrainState | None, int | None]:
    """(state, step) of the newest checkpoint that restores, laid out for this mesh; (None, None)
    if there is none. A newer one that fails (a file missing or cut short) is moved aside to
    ``checkpoints_damaged/`` with the reason logged, so a damaged save never costs the good
    checkpoints before it."""
    steps = sorted(ckpt.all_steps(), reverse=True) if cfg.checkpoint.resume else []
    if not steps:
        return None, None
    target = abstract_state(abstract_params, parts.tx, parts.state_shardings)
    skipped: list[tuple[int, str]] = []
    for step in steps:
        try:
            state, meta = ckpt.restore(target, step)
            break
        except Exception as e:  # noqa: BLE001 - any failure: try the checkpoint before it
            if isinstance(e, MemoryError) or "RESOURCE_EXHAUSTED" in str(e):
                raise  # out of memory says nothing about the checkpoint: never set it aside
            skipped.append((step, _one_line(e)))
    else:
        tried = "; ".join(f"step {s}: {why}" for s, why in skipped)
        raise ConfigError(
            f"cannot resume from {ckpt.dir}: no checkpoint restores onto this run's model and "
            f"optimizer ({tried}). If they were written for another model or optimizer, use a new "
            f"out_dir; if their files were damaged, restore them from a copy, or start over with "
            f"checkpoint.resume=false (this discards them)")
    if skipped:
        moved = ckpt.set_aside([s for s, _ in skipped], Path(cfg.out_dir) / "checkpoints_damaged")
        for s, why in skipped:
            log.warning("checkpoint step %d in %s does not restore (%s); moved to %s", s, ckpt.dir,
                        why, moved)
    pos = meta.get("data_position", {})
    if pos.get("batch_size", cfg.batch_size) != cfg.batch_size:
        raise ConfigError(f"{ckpt.dir}: checkpoint was written with batch_size="
                          f"{pos['batch_size']}, this run has {cfg.batch_size}; the data "
                          "position would not match (use a new out_dir)")
    why = f" (newer step{'s' if len(skipped) > 1 else ''} " \
          f"{', '.join(str(s) for s, _ in skipped)} skipped: damaged)" if skipped else ""
    log.warning("resuming from step %d of %s in %s%s", step, meta.get("total_steps", "?"),
                ckpt.dir, why)
    if jax.process_index() == 0:
        note_resume_step(Path(cfg.out_dir), step)
    return state, step


def _one_line(e: BaseException) -> str:
    """The gist of a (possibly 100-line TensorStore) error: its type and first line, cut short."""
    lines = [x.strip() for x in str(e).splitlines() if x.strip()]
    return f"{type(e).__name__}: {(lines[0] if lines else '')[:200]}"
