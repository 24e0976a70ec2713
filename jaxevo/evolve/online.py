"""The online loop of one round (GRPO, Dr. GRPO, DAPO, RLOO, GSPO...): sampling and training
alternate on the same devices.

Each step: the prompts at the round's prompt position are sampled `group_size` times by a
`Sampler` built on the **current** train-state parameters (the same arrays on the same mesh: no
host copy, no second model; `decode.prepare_weights` lays them out for decoding on device), the
completions are scored by the weighted `grpo.rewards` scorers (the scorer registry), advantages
are computed per group (`jaxevo.losses.group_advantages` / `rloo_advantages`), and `iterations`
optimiser steps of the one train step (`train/step.py`, objective `policy`) run on that batch —
old log-probs recorded once per batch when μ > 1, reference log-probs from the round's start
model when β > 0. With β = 0 the rows without advantage (dynamic sampling's filler groups) are
gathered into the last micro-batches, which the step skips; `share_prompt` K > 1 runs a prompt
once for K of its completions (`train.rollout.group_batch`).

Resume: every `checkpoint_every` steps an Orbax checkpoint holds the train state (params,
optimiser, RNG) and, in its meta, the prompt position, the draw counter that seeds sampling and
the draws the last steps needed (how many the next samples at once);
a killed run restarts at the step after its last checkpoint and draws the same prompts with the
same seeds, so it ends with the same parameters as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from jaxevo import distributed
from jaxevo.config import to_dict
from jaxevo.errors import ConfigError
from jaxevo.evolve.context import RoundContext
from jaxevo.evolve.scorers import SCORERS
from jaxevo.losses import group_advantages, rloo_advantages, soft_overlong_punishment
from jaxevo.sampling.api import Sampler
from jaxevo.sharding import param_shardings
from jaxevo.train.builder import build_step
from jaxevo.train.checkpoint import Checkpointer, export_model
from jaxevo.train.config import TrainConfig
from jaxevo.train.loop import TrainingDivergedError
from jaxevo.train.rollout import refuse_windowed_rows, token_logps_fn, update_batch, with_extras
from jaxevo.train.state import abstract_state, init_state
from jaxevo.train.step import fetch, finalize_metrics, to_global
from jaxevo.train.tblog import MetricsLogger
from jaxevo.weights.load import load_pretrained

# A step samples at once the most draws that any of the last this many steps needed (`rollout`).
AHEAD_WINDOW = 3


@dataclasses.dataclass
class OnlineResult:
    steps: int  # online steps done
    history: list[dict[str, float]]  # metrics of the steps run in this call
    export_dir: Path | None  # the exported model (None when stopped early)
    interrupted: bool  # stopped at `stop_at` with a checkpoint


def train_config(ctx: RoundContext, out: Path) -> TrainConfig:
    """The trainer's settings: `grpo.train` with the batch of one step (P × G sequences) and the
    `policy` objective configured from the `grpo:` section."""
    g = ctx.cfg.grpo
    hp = {"epsilon_low": g.epsilon_low, "epsilon_high": g.epsilon_low if g.epsilon_high is None else g.epsilon_high,
          "importance_sampling_level": g.importance_sampling_level, "delta": g.delta,
          "use_bias_correction_kl": g.use_bias_correction_kl,
          "max_completion_length": ctx.cfg.sample.max_new_tokens}
    tc = g.train
    rows, micro = g.prompts_per_step * g.group_size, g.micro_batch_size
    if g.share_prompt > 1:  # K completions a row (`group_batch`)
        rows, micro = rows // g.share_prompt, None if micro is None else micro // g.share_prompt
    return tc.replace(
        out_dir=str(out / "train"), batch_size=rows, micro_batch_size=micro, seed=ctx.seed,
        objective=dataclasses.replace(tc.objective, name="policy", loss_type=g.loss_type, beta=g.beta,
                                      hparams=hp),
        log=dataclasses.replace(tc.log, progress=ctx.progress))


def score_groups(ctx: RoundContext, groups: list[dict]) -> tuple[np.ndarray, dict[str, float]]:
    """[P·G] rewards: the weighted sum of the `grpo.rewards` scorers (+ the overlong penalty),
    and each term's mean (TRL's ``rewards/<name>/mean``). A score of None is NaN: a completion
    no term scores (the overlong penalty is a term) gets advantage 0 and stays out of its group's
    mean and std."""
    g = ctx.cfg.grpo
    terms, means = [], {}
    for name, weight in g.rewards.items():
        scorer = SCORERS.get(name, "grpo.rewards")
        params = scorer.prepare(ctx).params  # its set-up's defaults, `score.params`, the seed
        # None (a reward function with no opinion) -> NaN, left out like TRL's unscorable rewards
        r = np.asarray([np.nan if v is None else v for x in groups for v in scorer(x, params)], np.float32)
        terms.append(weight * r)
        means[f"rewards/{name}/mean"] = float(np.nanmean(r)) if np.any(~np.isnan(r)) else float("nan")
    if g.overlong_buffer:  # one more term, as TRL's soft_overlong_punishment reward function
        lengths = [resp["length"] for x in groups for resp in x["responses"]]
        pen = np.asarray(soft_overlong_punishment(lengths, ctx.cfg.sample.max_new_tokens, g.overlong_buffer))
        terms.append(pen)
        means["rewards/overlong/mean"] = float(pen.mean())
    stacked = np.stack(terms)
    # TRL: a weighted nansum over the reward terms; NaN only when every term is NaN
    total = np.where(np.all(np.isnan(stacked), axis=0), np.nan, np.nansum(stacked, axis=0)).astype(np.float32)
    return total, means


class _SamplingShare:
    """The online bar seen by the sampler as its `bar`: the rows sampled move it across the first
    `share` of step `step` (the share sampling took of the last step), so it moves every few
    seconds during sampling instead of once per step."""

    def __init__(self, bar, step: int, rows: int, share: float):
        self._bar, self._step, self._rows, self._share = bar, step, rows, share

    @property
    def n(self) -> float:
        return 0.0  # the sampler counts its rows from here

    @n.setter
    def n(self, rows_done: float) -> None:
        at = self._step + self._share * min(rows_done / self._rows, 1.0)
        self._bar.n = round(max(self._bar.n, at), 2)  # more draws (dynamic sampling) never go back

    def set_postfix(self, **kw) -> None:
        self._bar.set_postfix(phase="sampling", **kw)


def _draw(ctx: RoundContext, sampler: Sampler, items: list[dict], pos: dict[str, Any], draws: int = 1,
          bar=None):
    """Sample `draws` draws of `prompts_per_step` prompts from `pos` (advanced) in one call;
    returns per draw its [(item, prompt ids, completions)] per prompt, and the sampler's stats.
    `bar`: a `_SamplingShare`."""
    g, c = ctx.cfg.grpo, ctx.cfg.sample
    p = g.prompts_per_step
    chosen = [items[(pos["prompt"] + i) % len(items)] for i in range(draws * p)]
    pos["prompt"] += len(chosen)
    ids = sampler.encode([it["prompt"] for it in chosen], chat=ctx.cfg.prompts.chat)
    # Completions are answers: `sample.stop_after` ends them once the answer is written.
    sp = ctx.sampling(c.max_new_tokens, c.temperature, n=g.group_size, salt=pos["draw"], answers=True)
    pos["draw"] += 1  # one seed per call
    comps = sampler.generate_ids(ids, sp, progress=False, bar=bar)
    rows = list(zip(chosen, ids, comps))
    return [rows[d * p:(d + 1) * p] for d in range(draws)], sampler.last_stats


def _scored(ctx: RoundContext, draw: list[tuple]):
    """One draw's per-prompt (prompt ids, completions, rewards [G]) and its reward-term means."""
    groups = [{"item": it, "prompt": it["prompt"],
               "responses": [{"text": cp.text, "length": cp.length, "finish": cp.finish_reason} for cp in cs]}
              for it, _, cs in draw]
    rewards, means = score_groups(ctx, groups)
    rewards = rewards.reshape(len(draw), ctx.cfg.grpo.group_size)
    return [(ids, cs, r) for (_, ids, cs), r in zip(draw, rewards)], means


def rollout(ctx: RoundContext, sampler: Sampler, items: list[dict], pos: dict[str, Any], bar=None):
    """One step's groups: P prompts × G completions, with DAPO's dynamic sampling when on (groups
    whose rewards are all equal are replaced by more draws, at most `max_draws`; short of P, the
    dropped groups fill the batch so its shape stays fixed). `bar`: see `_SamplingShare`.

    The draws a step is likely to need are sampled together, in one `generate` call, since
    3 draws in one batch cost about two-thirds of 3 batches (docs/benchmarks.md): the most that
    any of the last `AHEAD_WINDOW` steps needed (``pos["needed"]``), all `max_draws` at first (a
    start model's groups are mostly flat). Short of P after them, one more call samples all the
    draws left: each new batch size is another compile, and one by one is the slowest. The draws
    are read in order as if drawn one by one; a draw not needed is dropped unscored and its
    prompts come again in the next step."""
    g = ctx.cfg.grpo
    limit = g.max_draws if g.dynamic_sampling else 1
    kept, dropped, means, new_tokens, seconds, draws = [], [], {}, 0, 0.0, 0
    needed = list(pos.get("needed", []))
    while len(kept) < g.prompts_per_step and draws < limit:
        ahead = min(max(needed, default=limit), limit) if draws == 0 else limit - draws
        sampled, st = _draw(ctx, sampler, items, pos, ahead, bar)
        new_tokens, seconds = new_tokens + st.new_tokens, seconds + st.seconds
        for draw in sampled:
            if len(kept) >= g.prompts_per_step:
                pos["prompt"] -= len(draw)  # not needed (nor scored): these prompts are drawn again
                continue
            groups, m = _scored(ctx, draw)
            draws += 1
            means = means or m  # the first draw's terms: the policy's reward before filtering
            for grp in groups:
                scored = grp[2][~np.isnan(grp[2])]
                flat = scored.size == 0 or bool(np.all(scored == scored[0]))  # no advantage but 0
                (dropped if g.dynamic_sampling and flat else kept).append(grp)
    if g.dynamic_sampling:
        pos["needed"] = (needed + [draws])[-AHEAD_WINDOW:]
    groups = (kept + dropped)[: g.prompts_per_step]
    stats = {"draws": draws, "groups_kept": min(len(kept), g.prompts_per_step),
             "sample_tokens": new_tokens, "sample_s": seconds, **means}
    return groups, stats


def _batch(ctx: RoundContext, groups, pad_to_multiple: int, num_micro: int = 1):
    g = ctx.cfg.grpo
    rewards = np.concatenate([grp[2] for grp in groups])
    if g.advantage == "rloo":
        adv = rloo_advantages(rewards, g.group_size)
    else:
        adv = group_advantages(rewards, g.group_size, scale=g.scale_rewards)
    prompts = [grp[0] for grp in groups for _ in range(g.group_size)]
    comps = [list(cp.token_ids) for grp in groups for cp in grp[1]]
    # Rows without advantage (the flat groups that fill a dynamic-sampling batch) go together into
    # the last micro-batches, whose forward and backward the step skips (no KL term: no gradient).
    batch = update_batch(prompts, comps, adv, per_row=g.share_prompt, num_micro=num_micro,
                         gather_inert=not g.beta, pad_to_multiple=pad_to_multiple)
    r = rewards.reshape(-1, g.group_size)
    lengths = np.asarray([len(cp) for cp in comps], np.float32)
    stats = {"reward": float(np.nanmean(rewards)), "reward_std": float(np.nanstd(rewards, ddof=1)),
             "frac_reward_zero_std": float(np.mean(np.all(r == r[:, :1], axis=1))),
             "completions/mean_length": float(lengths.mean()),
             "completions/clipped_ratio": float(np.mean([cp.finish_reason == "length"
                                                         for grp in groups for cp in grp[1]])),
             # what an update's cost goes with: rows x padded length, and the tokens in them
             "batch/length": float(batch.views["completion"]["tokens"].shape[1]),
             "batch/tokens": float(np.count_nonzero(batch.views["completion"]["segments"]))}
    return batch, stats


def run_online(ctx: RoundContext, out: Path, items: list[dict], start_model: str) -> OnlineResult:
    """Run (or resume from `out`/train/checkpoints) `grpo.steps` online steps from `start_model`
    on the round's prompt `items`; export the model to `out`/train/final. Stops early, with a
    checkpoint, after online step `ctx.stop_at` (the driver's `stop_at_step`: a simulated kill)."""
    g = ctx.cfg.grpo
    if not items:
        raise ConfigError("grpo: the round has no prompts (prompts.per_round and prompts.source)")
    tc = train_config(ctx, out)
    mesh = ctx.mesh
    ctx.release_samplers()
    pre = load_pretrained(start_model, dtype=tc.model.dtype, param_dtype=tc.model.param_dtype,
                          remat=tc.model.remat, mesh=mesh)
    mcfg, tok = pre.cfg, pre.tokenizer
    refuse_windowed_rows(mcfg, g.share_prompt, "grpo.share_prompt")
    params = jax.device_put(pre.params, param_shardings(mcfg, mesh))
    del pre
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    parts = build_step(tc, mcfg, mesh, abstract, g.steps * g.iterations)
    ckpt = Checkpointer(Path(tc.out_dir) / "checkpoints", keep=g.keep)
    latest = ckpt.latest_step()
    if latest is None:
        state = init_state(params, parts.tx, ctx.seed, parts.state_shardings)
        pos = {"step": 0, "prompt": 0, "draw": 0}
    else:
        state, meta = ckpt.restore(abstract_state(abstract, parts.tx, parts.state_shardings), latest)
        pos = dict(meta["position"])
    ref_params = params if g.beta else None
    if ref_params is not None and any(a is b for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(params))):
        ref_params = jax.tree.map(lambda x: x.copy(), ref_params)  # the state is donated
    del params
    logps = token_logps_fn(mcfg, mesh, chunk=tc.logprob_chunk, vocab_chunk=tc.vocab_chunk)
    smesh = mesh if jax.device_count() > 1 else None  # one device: the sampler's fast path
    logger = MetricsLogger(tc.out_dir, tensorboard=tc.log.tensorboard) if distributed.is_main() else None
    bar = (tqdm(total=g.steps, initial=pos["step"], desc=f"{g.loss_type} online", unit="step",
                dynamic_ncols=True) if tc.log.progress and pos["step"] < g.steps else None)
    end = g.steps if ctx.stop_at is None else min(g.steps, int(ctx.stop_at))
    history: list[dict[str, float]] = []
    share = 0.3  # sampling's share of a step, until the first step measures it
    try:
        for s in range(pos["step"], end):
            t0 = time.perf_counter()
            sampler = Sampler(mcfg, state.params, tok, mesh=smesh, max_batch=ctx.cfg.sample.batch_size)
            shared = None if bar is None else _SamplingShare(bar, s, g.prompts_per_step * g.group_size, share)
            groups, m = rollout(ctx, sampler, items, pos, shared)
            del sampler  # its prepared weights go before the (donating) update
            batch, bstats = _batch(ctx, groups, tc.data.pad_to_multiple, tc.num_micro)
            gb = to_global(batch, mesh)
            if g.beta:
                gb = with_extras(gb, ref_token_lp=logps(ref_params, gb))
            if g.iterations > 1:
                gb = with_extras(gb, old_token_lp=logps(state.params, gb))
            t1 = time.perf_counter()
            if bar is not None:  # one compiled call: the bar cannot move inside it, so say so
                bar.set_postfix(phase="update")
            steps = []
            for _ in range(g.iterations):
                state, raw = parts.step(state, gb)
                steps.append(finalize_metrics(fetch(raw)))
            if not all(x["finite"] for x in steps):
                raise TrainingDivergedError(
                    f"online step {s + 1}: loss={steps[-1]['loss']}, grad_norm={steps[-1]['grad_norm']} not "
                    f"finite; the update was skipped and training stopped (last checkpoint in {ckpt.dir}). "
                    "Lower grpo.train.optim.lr or check the rewards")
            t2 = time.perf_counter()
            metrics = {k: float(np.mean([x[k] for x in steps])) for k in steps[0]}
            metrics.update(m, **bstats, step_time_s=t2 - t0, train_s=t2 - t1,
                           sample_tokens_per_s=m["sample_tokens"] / max(m["sample_s"], 1e-9),
                           train_tokens_per_s=g.iterations * bstats["batch/tokens"] / max(t2 - t1, 1e-9),
                           tokens_per_s=m["sample_tokens"] / max(t2 - t0, 1e-9))
            pos["step"] = s + 1
            history.append(metrics)
            if logger:
                logger.log(s + 1, metrics)
            share = min(max(m["sample_s"] / max(t2 - t0, 1e-9), 0.05), 0.95)
            if bar is not None:
                bar.n = s + 1
                bar.set_postfix(reward=f"{metrics['reward']:.3f}", kl=f"{metrics.get('kl', 0.0):.4f}",
                                tok_s=f"{metrics['tokens_per_s']:.0f}")
            if (g.checkpoint_every and (s + 1) % g.checkpoint_every == 0) or s + 1 == end:
                ckpt.save(s + 1, state, {"position": dict(pos), "step": s + 1, "steps": g.steps,
                                         "config": to_dict(tc)})
        ckpt.wait()
    finally:
        if bar is not None:
            bar.close()
        if logger:
            logger.close()
        ckpt.close()
    if pos["step"] < g.steps:
        return OnlineResult(pos["step"], history, None, interrupted=True)
    export_dir = export_model(state.params, mcfg, Path(tc.out_dir) / "final", tokenizer=tok,
                              info={"step": g.steps, "objective": f"online {g.loss_type}",
                                    "base_model": start_model, "config": to_dict(tc)})
    return OnlineResult(pos["step"], history, export_dir, interrupted=False)
