"""The training loop of one SFT or preference phase.

    result = train(cfg)                       # everything from the config
    result = train(cfg, pretrained=pre, records=rows)   # in-memory model / data (tests, drivers)

Order of work: mesh -> model (`load_pretrained`, straight into its shardings) -> records -> views
(tokenised, truncated, optionally packed) -> reference log-probs once (preference objectives) ->
optimizer and state (fresh, or restored from the latest Orbax checkpoint in ``out_dir``, onto this
run's mesh) -> steps (metrics JSONL + TensorBoard + tqdm, checkpoints every N steps) -> final
checkpoint and export (``out_dir/final``: a jaxevo checkpoint dir any command loads).

A step whose loss, gradient or update is not finite is skipped inside the jitted step and the
loop raises `TrainingDivergedError` naming the step; checkpoints written before stay intact.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np

from jaxevo import preemption
from jaxevo.config import dump_config, to_dict
from jaxevo.errors import ConfigError, JaxevoError
from jaxevo.sharding import make_mesh, param_shardings
from jaxevo.train.batches import BatchStream, TokenizedData, pack, read_records, tokenize_views
from jaxevo.train.checkpoint import Checkpointer, export_model
from jaxevo.train.config import TrainConfig
from jaxevo.train.objectives import Objective, get_objective
from jaxevo.train.optim import make_optimizer
from jaxevo.train.reference import (attach_reference, cached_reference_logps,
                                    compute_reference_logps, fingerprint, reference_model_id)
from jaxevo.train.state import TrainState, abstract_state, init_state, state_shardings
from jaxevo.train.step import fetch, finalize_metrics, make_train_step, to_global
from jaxevo.train.tblog import MetricsLogger

log = logging.getLogger(__name__)


class TrainingDivergedError(JaxevoError):
    """The loss, gradient or update became NaN/inf; the update was not applied."""


@dataclasses.dataclass
class TrainResult:
    state: TrainState
    steps: int  # optimizer steps done (state.step)
    history: list[dict[str, float]]  # metrics of the steps run in this call
    out_dir: Path
    export_dir: Path | None
    stats: dict[str, Any]


def prepare_data(cfg: TrainConfig, objective: Objective, tokenizer,
                 records: Sequence[dict] | None = None) -> TokenizedData:
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
    data = tokenize_views(records, objective.views, tokenizer, max_length=d.max_length,
                          truncation=d.truncation, chat_template=d.chat_template, system=d.system,
                          append_eos=d.append_eos, pad_to_multiple=d.pad_to_multiple,
                          templates=templates)
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


def total_steps(cfg: TrainConfig, num_examples: int) -> int:
    if cfg.steps is not None:
        return int(cfg.steps)
    return max(1, math.ceil(cfg.epochs * num_examples / cfg.batch_size))


def _batch_tokens(batch) -> int:
    return int(sum(np.count_nonzero(v["segments"]) for v in batch.views.values()))


def train(cfg: TrainConfig, *, pretrained=None, records: Sequence[dict] | None = None,
          stop_at: int | None = None, mesh=None) -> TrainResult:
    """Run (or resume) the phase described by ``cfg``; see the module doc.

    ``pretrained``: a `jaxevo.weights.load.Pretrained` to train instead of loading
    ``cfg.model.path`` (its params should be laid out for ``mesh``); ``records``: in-memory
    examples instead of ``cfg.data.path``; ``stop_at``: stop (with a checkpoint) after this
    optimizer step, as if interrupted — the schedule still follows the full ``total_steps``.
    """
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    objective = get_objective(cfg.objective.name)
    uses_ref = objective.needs_reference(cfg.objective)
    mesh = mesh if mesh is not None else make_mesh(cfg.mesh)
    n_batch_dev = mesh.shape["data"] * mesh.shape["fsdp"]
    mb = cfg.micro_batch_size or cfg.batch_size
    if cfg.batch_size % n_batch_dev:
        raise ConfigError(f"batch_size={cfg.batch_size} must be a multiple of the batch devices "
                          f"(data x fsdp = {n_batch_dev}) of mesh {dict(mesh.shape)}")
    if jax.process_index() == 0:
        dump_config(cfg, out_dir / "config.yaml")

    # -------------------------------------------------------------- model and data
    if pretrained is None:
        from jaxevo.weights.load import load_pretrained

        pretrained = load_pretrained(cfg.model.path, dtype=cfg.model.dtype,
                                     param_dtype=cfg.model.param_dtype, remat=cfg.model.remat,
                                     mesh=mesh)
    mcfg, tokenizer = pretrained.cfg, pretrained.tokenizer
    p_sh = param_shardings(mcfg, mesh)
    params = jax.device_put(pretrained.params, p_sh)
    pretrained = None  # keep no second reference to the initial weights alive during training
    data = prepare_data(cfg, objective, tokenizer, records)
    stats = dict(data.stats, rows=data.num_examples, length=data.length)
    total = total_steps(cfg, data.num_examples)
    log.info("data: %s", stats)

    # -------------------------------------------------------------- reference log-probs
    ref_forward = uses_ref and not cfg.objective.precompute_ref
    ref_params, ref_cfg = None, mcfg
    if uses_ref:
        if cfg.model.reference:
            from jaxevo.weights.load import load_pretrained

            rp = load_pretrained(cfg.model.reference, dtype=cfg.model.dtype,
                                 param_dtype=cfg.model.param_dtype, mesh=mesh)
            ref_params, ref_cfg = rp.params, rp.cfg
            ref_id = reference_model_id(cfg.model.reference, cfg.model.dtype)
        else:
            # The initial weights are the reference. `init_state` copies them into the (donated)
            # state, so these arrays stay valid and unchanged.
            ref_params = params
            ref_id = reference_model_id(cfg.model.path if records is None else "<in-memory>",
                                        cfg.model.dtype)
        if not ref_forward:
            key = fingerprint(data, objective.view_names, ref_id)
            t0 = time.time()
            cache = out_dir / "reference_logps.npz"
            ref = cached_reference_logps(cache, key, lambda: compute_reference_logps(
                ref_params, ref_cfg, data, objective.view_names, mesh=mesh,
                param_shardings=param_shardings(ref_cfg, mesh),
                batch_size=cfg.objective.ref_batch_size, chunk=cfg.logprob_chunk,
                vocab_chunk=cfg.vocab_chunk, pad_to_multiple=cfg.data.pad_to_multiple,
                progress=cfg.log.progress))
            data = attach_reference(data, ref)
            stats["reference_s"] = round(time.time() - t0, 3)
            ref_params = None  # not needed by the step any more

    # -------------------------------------------------------------- state
    tx, schedule = make_optimizer(cfg.optim, total)
    abstract_params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    st_sh = state_shardings(p_sh, tx, abstract_params, mesh)
    ckpt = Checkpointer(out_dir / "checkpoints", keep=cfg.checkpoint.keep)
    latest = ckpt.latest_step() if cfg.checkpoint.resume else None
    if latest is not None:
        try:
            state, meta = ckpt.restore(abstract_state(abstract_params, tx, st_sh), latest)
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(
                f"cannot resume from {ckpt.dir} step {latest}: its train state does not match this "
                f"run's model/optimizer ({type(e).__name__}: {str(e)[:500]}); use a new out_dir or "
                "checkpoint.resume=false") from e
        pos = meta.get("data_position", {})
        if pos.get("batch_size", cfg.batch_size) != cfg.batch_size:
            raise ConfigError(f"{ckpt.dir}: checkpoint was written with batch_size="
                              f"{pos['batch_size']}, this run has {cfg.batch_size}; the data "
                              "position would not match (use a new out_dir)")
        log.info("resumed from %s step %d", ckpt.dir, latest)
        del params
    else:
        state = init_state(params, tx, cfg.seed, st_sh)
        if ref_forward and any(a is b for a, b in zip(jax.tree.leaves(state.params),
                                                      jax.tree.leaves(ref_params))):
            ref_params = jax.tree.map(lambda x: x.copy(), ref_params)  # the state is donated
        del params
    start = int(fetch(state.step))

    step_fn = make_train_step(
        mcfg, objective, cfg.objective, tx, schedule, mesh=mesh, state_shardings=st_sh,
        num_micro=cfg.batch_size // mb, chunk=cfg.logprob_chunk, vocab_chunk=cfg.vocab_chunk,
        ref_forward=ref_forward, ref_cfg=ref_cfg,
        ref_shardings=param_shardings(ref_cfg, mesh) if ref_forward else None)
    stream = BatchStream(data, cfg.batch_size, seed=cfg.seed, shuffle=cfg.data.shuffle,
                         pad_to_multiple=cfg.data.pad_to_multiple)

    def meta(step: int) -> dict[str, Any]:
        return {"step": step, "total_steps": total, "objective": objective.name,
                "data_position": {"examples_seen": step * cfg.batch_size,
                                  "batch_size": cfg.batch_size, "seed": cfg.seed,
                                  "num_examples": data.num_examples},
                "config": to_dict(cfg)}

    # -------------------------------------------------------------- loop
    end = total if stop_at is None else min(total, int(stop_at))
    logger = MetricsLogger(out_dir, tensorboard=cfg.log.tensorboard) if jax.process_index() == 0 else None
    bar = None
    if cfg.log.progress and end > start:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=start, desc=f"train {objective.name}", unit="step",
                   dynamic_ncols=True)
    history: list[dict[str, float]] = []
    last_saved = latest
    preempted = False
    # SIGTERM (how TPU VMs announce preemption) only sets a flag while training: the loop ends
    # after the current step with a checkpoint. Outside training the default handler applies.
    preemption.install()
    t_start = time.time()
    try:
        for s in range(start, end):
            batch = stream.batch(s)
            tokens = _batch_tokens(batch)
            t0 = time.time()
            state, raw = step_fn(state, to_global(batch, mesh), ref_params)
            m = finalize_metrics(fetch(raw))
            dt = time.time() - t0
            m.update(step_time_s=dt, tokens_per_s=tokens / dt if dt > 0 else 0.0, tokens=tokens)
            if not m["finite"]:
                where = (f"the last good checkpoint is step {last_saved} in {ckpt.dir}"
                         if last_saved is not None else "no checkpoint was written yet")
                raise TrainingDivergedError(
                    f"training diverged at step {s + 1}: loss={m['loss']}, "
                    f"grad_norm={m['grad_norm']}, param_norm={m['param_norm']} (not finite); the "
                    f"update was skipped and training stopped; {where}. Lower optim.lr, enable "
                    "optim.clip_norm, or check the data")
            history.append(m)
            if logger and ((s + 1) % max(1, cfg.log.every) == 0 or s + 1 == end):
                logger.log(s + 1, m)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{m['loss']:.4f}", tok_s=f"{m['tokens_per_s']:.0f}")
            every = cfg.checkpoint.every
            if every and (s + 1) % every == 0 and s + 1 < end:
                ckpt.save(s + 1, state, meta(s + 1))
                last_saved = s + 1
            if preemption.should_stop(s + 1) and s + 1 < end:  # SIGTERM: checkpoint, then stop
                preempted = True
                break
        done = int(fetch(state.step))
        skip_final = done == total and not cfg.checkpoint.final  # finished: nothing to resume
        if done != last_saved and (end > start or latest is None) and not skip_final:
            ckpt.save(done, state, meta(done))
        ckpt.wait()
    finally:
        preemption.uninstall()
        if bar is not None:
            bar.close()
        if logger:
            logger.close()
        ckpt.close()
    if preempted:
        raise preemption.Preempted(done, str(ckpt.dir))
    stats["train_s"] = round(time.time() - t_start, 3)

    export_dir = None
    if cfg.checkpoint.export and int(fetch(state.step)) == total:
        export_dir = export_model(
            state.params, mcfg, out_dir / "final", tokenizer=tokenizer,
            info={"step": total, "objective": objective.name, "base_model": cfg.model.path,
                  "config": to_dict(cfg)})
    return TrainResult(state=state, steps=int(fetch(state.step)), history=history,
                       out_dir=out_dir, export_dir=export_dir, stats=stats)
