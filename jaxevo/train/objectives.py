"""Objective registry: a configured name -> which sequence views to run and which loss to apply.

An `Objective` says
* ``fields``: the JSONL fields it needs;
* ``views``: ``(name, context_fn, response_fn)`` — how each example becomes model inputs
  (e.g. DPO: ``chosen = prompt ⊕ chosen``, ``rejected = prompt ⊕ rejected``);
* ``needs_reference(hp)``: whether the loss needs reference log-probs under these hyperparameters
  (then they are precomputed once); a preference objective asks its loss's `LossSpec`;
* ``loss(inp, hp)``: a pure function of one micro-batch's log-probs (a `LossInputs`) returning
  ``(loss_part, metrics)``. ``loss_part`` is this micro-batch's share of the *global* batch loss
  (divide by the global normalisers in ``inp.norm``), so summing parts over micro-batches gives
  exactly the loss of the whole batch; ``metrics`` maps names to ``(sum, count)`` pairs that are
  summed over micro-batches and divided once at the end (never a mean of means).

The losses themselves are `jaxevo.losses`; this module is only glue. Add an objective with
`register_objective` (the `jaxevo.registry` helper: a taken name is an error) — the train step
never branches on names.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from jaxevo.data.records import chat_of
from jaxevo.errors import ConfigError
from jaxevo.losses import (PREFERENCE_LOSSES, LossSpec, bradley_terry, evolve_loss, preference_loss,
                           preference_metrics, self_meta_loss, sequence_nll)
from jaxevo.losses.reward import center_penalty
from jaxevo.registry import Registry, typed

Array = jax.Array
Metrics = dict[str, tuple[Array, Array]]


@dataclasses.dataclass(frozen=True)
class LossInputs:
    """One micro-batch, as seen by an objective's loss.

    logps / counts: view -> [b] summed response log-probs / response token counts (policy).
    token_lp / masks: view -> [b, T] token log-probs / trained-token masks (token-level losses).
    ref: view -> [b] reference log-prob sums (precomputed or from a reference forward), or {}.
    extras: per-example [b] arrays from the data (``weight``, ``margin``, ...).
    norm: global-batch normalisers: ``examples`` (global batch size) and ``tokens/<view>``.
    scores: view -> [b] f32 scalar-head outputs (objectives with ``reads="score"``; their
    logps / token_lp / masks are empty and counts hold each view's token count).
    """

    logps: Mapping[str, Array]
    counts: Mapping[str, Array]
    token_lp: Mapping[str, Array]
    masks: Mapping[str, Array]
    ref: Mapping[str, Array]
    extras: Mapping[str, Array]
    norm: Mapping[str, Array]
    scores: Mapping[str, Array] = dataclasses.field(default_factory=dict)


ContextFn = Callable[[Mapping[str, Any], Mapping[str, str]], str]
ResponseFn = Callable[[Mapping[str, Any]], str]


@dataclasses.dataclass(frozen=True)
class Objective:
    name: str
    fields: tuple[str, ...]
    views: tuple[tuple[str, ContextFn, ResponseFn], ...]
    loss: Callable[[LossInputs, Any], tuple[Array, Metrics]]
    needs_reference: Callable[[Any], bool] = lambda hp: False  # hp: the ObjectiveSection
    token_level: bool = False  # only token-level losses may pack examples
    optional_fields: tuple[str, ...] = ()  # per-example numbers copied into extras when present
    # What the model gives the loss: "logprobs" (the LM head's token log-probs) or "score" (a
    # scalar head [E, 1] read at each view's last real token: a reward model, its views rendered
    # as conversations; jaxevo/train/score_head.py).
    reads: str = "logprobs"
    check: Callable[[Any], None] = lambda hp: None  # refuse bad hyperparameters before any work
    # Whether its loss reads only the per-view sums (``logps``, ``ref``), so that
    # ``objective.token_alpha`` (ω-weighted sums for policy and reference) means what it says.
    token_weights: bool = False
    # ``inert(extras, hp)``: a traced bool, True when a micro-batch's loss has zero gradient
    # whatever the parameters (policy rows whose advantages are all 0, with no KL term), or None
    # when it never is under ``hp``. The step then skips that micro-batch's forward and backward
    # and takes its loss and metrics from log-probs of 0 (`train.step`): they must come out the
    # same as the computed ones.
    inert: Callable[[Mapping[str, Array], Any], Array | None] | None = None

    @property
    def view_names(self) -> tuple[str, ...]:
        return tuple(v[0] for v in self.views)


OBJECTIVES: Registry[Objective] = Registry("objective", adapt=typed(
    Objective, "build an Objective(...) (jaxevo.train.objectives) and name that"))


def register_objective(obj: Objective, *aliases: str, replace: bool = False) -> Objective:
    """Add ``obj`` under its name (and ``aliases``); returns it."""
    return OBJECTIVES.add(obj.name, obj, *aliases, replace=replace)


def get_objective(name: str) -> Objective:
    """The objective a config's ``objective.name`` picks (a ConfigError listing the known ones)."""
    return OBJECTIVES.get(name, "objective.name")


def check_token_weights(hp, objective: Objective) -> None:
    """Refuse ``objective.token_alpha`` for an objective whose loss does not read the per-view
    sums (it would be ignored); the objective's own ``check`` refuses losses that cannot take it."""
    if hp.token_alpha is not None and not objective.token_weights:
        raise ConfigError(f"objective.token_alpha={hp.token_alpha!r}: objective {objective.name!r} "
                          f"does not read ω-weighted log-prob sums (only `preference` does); set "
                          f"objective.token_alpha: null")


def _f32(x) -> Array:
    return jnp.asarray(x, jnp.float32)


def _mean_metric(x: Array) -> tuple[Array, Array]:
    """A per-example [b] value as (sum, count)."""
    x = jax.lax.stop_gradient(_f32(x))
    return jnp.sum(x), jnp.asarray(x.shape[0], jnp.float32)


def _scalar_metric(x: Array, b: int) -> tuple[Array, Array]:
    """A micro-batch mean as (sum, count) = (mean * b, b)."""
    return jax.lax.stop_gradient(_f32(x)) * b, jnp.asarray(b, jnp.float32)


# ----------------------------------------------------------------------------- views


def _prompt(r, t):
    return chat_of(r)  # the prompt, or the record's chat messages / system turn


def _field(name: str) -> ResponseFn:
    return lambda r: r[name]


def _refine_context(r, t):
    return t["refine_template"].format(prompt=r["prompt"], previous=r["rejected"])


def _feedback_context(r, t):
    return t["feedback_template"].format(prompt=r["prompt"], previous=r["response"])


def self_refine_prompt(template: str, prompt: str, previous: str, feedback: str | None) -> str:
    """SELF's refinement context: the refine template, then the feedback it should act on. The
    round driver's refine stage builds the same text when a feedback stage ran."""
    text = template.format(prompt=prompt, previous=previous)
    return text + "\n\nFeedback:\n" + feedback if feedback else text


def _self_refine_context(r, t):
    return self_refine_prompt(t["refine_template"], r["prompt"], r["response"], r["feedback"])


# ----------------------------------------------------------------------------- SFT


def _sft(inp: LossInputs, hp) -> tuple[Array, Metrics]:
    lp, m = inp.token_lp["response"], inp.masks["response"]
    s = jnp.sum(jnp.where(m, lp, 0.0))
    n = jnp.sum(m).astype(jnp.float32)
    loss = -s / jnp.maximum(inp.norm["tokens/response"], 1.0)  # token mean over the global batch
    return loss, {"nll": (jax.lax.stop_gradient(-s), n)}


register_objective(Objective(
    name="sft",
    fields=("prompt", "response"),
    views=(("response", _prompt, _field("response")),),
    loss=_sft,
    token_level=True,
))


# ----------------------------------------------------------------------------- preference


def _loss_spec(hp) -> LossSpec:
    return PREFERENCE_LOSSES.get(hp.loss_type, "objective.loss_type")


def _preference(inp: LossInputs, hp) -> tuple[Array, Metrics]:
    spec = _loss_spec(hp)
    kw = dict(hp.hparams)
    if "beta" in spec.hparams:
        kw.setdefault("beta", hp.beta)
    c, r = inp.logps["chosen"], inp.logps["rejected"]
    # Lengths, fDPO weights and margins go to the losses that declare them.
    if spec.needs_lengths:
        kw.setdefault("chosen_lengths", inp.counts["chosen"])
        kw.setdefault("rejected_lengths", inp.counts["rejected"])
    for name, value in (("weights", inp.extras.get("weight")), ("margin", inp.extras.get("margin"))):
        if value is not None and name in spec.data:
            kw.setdefault(name, value)
    rc, rr = inp.ref.get("chosen"), inp.ref.get("rejected")
    losses, cr, rrw = preference_loss(hp.loss_type, c, r, rc, rr, **kw)
    loss = jnp.sum(losses) / inp.norm["examples"]
    metrics: Metrics = {}
    if hp.nll_weight:
        nll_sum = -jnp.sum(c)
        loss = loss + hp.nll_weight * nll_sum / jnp.maximum(inp.norm["tokens/chosen"], 1.0)
        metrics["nll"] = (jax.lax.stop_gradient(nll_sum), jnp.sum(inp.counts["chosen"]))
    # TRL logs summed log-probs for the DPO family, averaged ones for the reference-free losses
    # (its CPO and ORPO trainers).
    if not spec.needs_reference:
        lc = c / jnp.maximum(inp.counts["chosen"], 1.0)
        lr = r / jnp.maximum(inp.counts["rejected"], 1.0)
    else:
        lc, lr = c, r
    sums = preference_metrics(cr, rrw, lc, lr)
    count = sums.pop("count")
    metrics.update({k: (v, count) for k, v in sums.items()})
    metrics["pref_loss"] = _mean_metric(losses)
    return loss, metrics


def _check_preference(hp) -> None:
    spec = _loss_spec(hp)
    if hp.token_alpha is not None and (not spec.needs_reference or spec.needs_lengths):
        raise ConfigError(
            f"objective.token_alpha={hp.token_alpha!r} weights summed log-probs against the "
            f"reference's; loss_type {hp.loss_type!r} is reference-free or length-normalised. Use "
            f"a DPO-family loss (fdpo, sigmoid, ...) or set objective.token_alpha: null")


register_objective(Objective(
    name="preference",
    fields=("prompt", "chosen", "rejected"),
    views=(("chosen", _prompt, _field("chosen")), ("rejected", _prompt, _field("rejected"))),
    loss=_preference,
    needs_reference=lambda hp: _loss_spec(hp).needs_reference,
    optional_fields=("weight", "margin"),
    check=_check_preference,
    token_weights=True,
), "dpo")


# ----------------------------------------------------------------------------- EVOLVE


def _evolve(inp: LossInputs, hp) -> tuple[Array, Metrics]:
    kw = dict(hp.hparams)
    kw.setdefault("beta", hp.beta)
    kw.setdefault("nll_weight", 0.0)
    names = ("direct_chosen", "direct_rejected", "refine_chosen", "refine_rejected")
    ref = [inp.ref.get(n) for n in names]
    counts = {f"{n}_count": inp.counts[n] for n in names}
    loss, aux = evolve_loss(*(inp.logps[n] for n in names), *ref, **counts, **kw)
    b = inp.logps["direct_chosen"].shape[0]
    # evolve_loss averages over the micro-batch; micro-batches are equal-sized and full.
    loss = loss * b / inp.norm["examples"]
    if hp.nll_weight:  # token mean over the *global* batch (exact under accumulation)
        nll_sum = -jnp.sum(inp.logps["direct_chosen"])
        loss = loss + hp.nll_weight * nll_sum / jnp.maximum(inp.norm["tokens/direct_chosen"], 1.0)
    return loss, {k: _scalar_metric(v, b) for k, v in aux.items()}


def _evolve_needs_reference(hp) -> bool:
    return hp.hparams.get("variant", "dpo") != "simpo"


register_objective(Objective(
    name="evolve",
    fields=("prompt", "chosen", "rejected"),
    views=(
        ("direct_chosen", _prompt, _field("chosen")),
        ("direct_rejected", _prompt, _field("rejected")),
        ("refine_chosen", _refine_context, _field("chosen")),
        ("refine_rejected", _refine_context, _field("rejected")),
    ),
    loss=_evolve,
    needs_reference=_evolve_needs_reference,
))


def _refine_context_of_chosen(r, t):
    return t["refine_template"].format(prompt=r["prompt"], previous=r["chosen"])


# METHODS.md §2.2 variant (b), SRPO-style: the rejected refine view is "degrade y_w into y_l",
# ``y_l | x, y_w, z``, instead of "keep y_l" (``y_l | x, y_l, z``); the loss is `evolve`'s
# (`hparams.variant` still picks its dpo / ipo / simpo term).
register_objective(Objective(
    name="evolve_srpo",
    fields=("prompt", "chosen", "rejected"),
    views=(
        ("direct_chosen", _prompt, _field("chosen")),
        ("direct_rejected", _prompt, _field("rejected")),
        ("refine_chosen", _refine_context, _field("chosen")),
        ("refine_rejected", _refine_context_of_chosen, _field("rejected")),
    ),
    loss=_evolve,
    needs_reference=_evolve_needs_reference,
))


# ----------------------------------------------------------------------------- SELF meta-skills


def _self_meta(inp: LossInputs, hp) -> tuple[Array, Metrics]:
    nll = {v: sequence_nll(inp.logps[v], inp.counts[v]) for v in ("feedback", "refine", "direct")}
    kw = dict(hp.hparams)
    # 0 marks a plain (prompt, answer) example mixed in (SELF's restart): its direct view only.
    kw.setdefault("has_meta", inp.extras.get("has_meta"))
    loss, aux = self_meta_loss(nll["feedback"], nll["refine"], nll["direct"], **kw)
    b = inp.logps["direct"].shape[0]
    loss = loss * b / inp.norm["examples"]
    return loss, {k: _scalar_metric(v, b) for k, v in aux.items()}


register_objective(Objective(
    name="self_meta",
    # {"prompt", "response" (initial answer), "feedback" (critique), "refined" (improved answer)}
    fields=("prompt", "response", "feedback", "refined"),
    views=(
        ("feedback", _feedback_context, _field("feedback")),
        ("refine", _self_refine_context, _field("refined")),
        ("direct", _prompt, _field("refined")),
    ),
    loss=_self_meta,
    optional_fields=("has_meta",),
))


# ----------------------------------------------------------------------------- reward model

REWARD_HPARAMS = ("center_rewards_coefficient", "init_std")


def _reward_model(inp: LossInputs, hp) -> tuple[Array, Metrics]:
    """Bradley–Terry on the score head's r_chosen, r_rejected [b] (TRL's RewardTrainer): the
    per-pair losses and centring terms summed and divided by the global batch size (exact under
    micro-batching). min/max_reward are per micro-batch and averaged over micro-batches, which is
    what TRL logs under gradient accumulation (with one micro-batch: over the whole batch)."""
    rc, rr = inp.scores["chosen"], inp.scores["rejected"]
    n = inp.norm["examples"]
    loss = jnp.sum(bradley_terry(rc, rr, inp.extras.get("margin"))) / n
    coef = hp.hparams.get("center_rewards_coefficient")
    if coef:
        loss = loss + float(coef) * jnp.sum(center_penalty(rc, rr)) / n
    both = jax.lax.stop_gradient(jnp.concatenate([rc, rr]).astype(jnp.float32))
    one = jnp.ones((), jnp.float32)
    return loss, {"accuracy": _mean_metric(rc > rr), "margin": _mean_metric(rc - rr),
                  "mean_reward": _mean_metric(both), "min_reward": (jnp.min(both), one),
                  "max_reward": (jnp.max(both), one)}


def _check_reward_model(hp) -> None:
    bad = sorted(set(hp.hparams) - set(REWARD_HPARAMS))
    if bad:
        raise ConfigError(f"objective.hparams {bad}: objective reward_model takes only "
                          f"{list(REWARD_HPARAMS)}")
    for k in REWARD_HPARAMS:
        v = hp.hparams.get(k)
        if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0):
            raise ConfigError(f"objective.hparams.{k}={v!r}: give a number >= 0")


register_objective(Objective(
    name="reward_model",
    # {"prompt" (or chat "messages"), "chosen", "rejected"[, "margin"]}
    fields=("prompt", "chosen", "rejected"),
    views=(("chosen", _prompt, _field("chosen")), ("rejected", _prompt, _field("rejected"))),
    loss=_reward_model,
    optional_fields=("margin",),
    reads="score",
    check=_check_reward_model,
))
