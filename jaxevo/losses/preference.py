"""Preference losses as a registry of small pure functions, with TRL's exact semantics.

Every loss maps per-sequence log-probabilities of a batch of pairs to

    (losses [B] f32, chosen_rewards [B] f32, rejected_rewards [B] f32)

exactly as TRL 1.16 computes them for the same ``loss_type`` and hyperparameter names
(``DPOTrainer._compute_loss`` for the DPO family, ``CPOTrainer.cpo_loss`` for ``simpo``,
``ORPOTrainer.odds_ratio_loss`` for ``orpo``). Golden values produced by TRL itself are
checked in ``tests/losses`` (``tests/golden/make_preference_goldens.py``). Each loss is registered
with the inputs it needs (`register(name, needs_reference=, needs_lengths=, hparams=, data=)`,
a `LossSpec`): the trainer reads that declaration, never the function's signature.

Input convention (one convention for every loss type):

* ``chosen_logps`` / ``rejected_logps`` and the ``ref_*`` arguments are **summed** response
  log-probs ``Σ_t log π(y_t | …)`` of shape [B] (what ``sequence_logps`` returns as ``sum``).
* Losses that need per-token averages (``ipo``, ``sigmoid_norm``, ``simpo``, ``orpo``) take the
  response lengths as the keyword hparams ``chosen_lengths`` / ``rejected_lengths`` [B] and divide
  themselves (lengths are clamped to >= 1, as TRL's IPO does). To feed already-averaged log-probs,
  pass lengths of 1.
* Reference log-probs are ignored (may be ``None``) for the reference-free ``simpo`` and ``orpo``.

Rewards are always ``stop_gradient``-ed (TRL detaches them) and are what TRL logs:
``β·(logp − ref_logp)`` (summed, never length-normalised, even for ``ipo``) for the DPO family and
``fdpo``; ``β·avg_logp`` for ``simpo`` and ``orpo`` (no reference model).

Subtleties of TRL 1.16 that this module reproduces on purpose:

* ``sigmoid`` ignores ``label_smoothing`` (older TRL used it for cDPO); conservative DPO is
  registered here separately as ``cdpo`` (TRL's CPO ``sigmoid`` form, not a DPOTrainer type).
* ``robust`` is the *unbiased* rDPO estimator
  ``[−(1−ε)·logσ(βh) + ε·logσ(−βh)] / (1 − 2ε)``, not cDPO's ``−(1−ε)logσ(βh) − ε·logσ(−βh)``.
* ``ipo`` divides each log-ratio by its own completion length before the square:
  ``((Δ_w/|y_w| − Δ_l/|y_l|) − 1/(2β))²``.
* ``simpo`` (CPO trainer) is ``−(1−ε)logσ(β·(a_w − a_l − γ/β)) − ε·logσ(−β·(…))`` with average
  log-probs ``a``; i.e. the margin ``simpo_gamma`` is subtracted *after* scaling by β.
* ``orpo``: TRL's ``odds_ratio_loss`` returns ``β·logσ(log_odds)`` and the trainer *subtracts* its
  mean from the NLL. Here ``losses = −β·logσ(log_odds)`` (a loss to minimise, same value with the
  sign flipped); the NLL part is added by the trainer's ``preference`` objective with
  ``nll_weight=1`` (TRL's NLL runs over prompt+response tokens of the chosen sequence).
* ``aot`` / ``aot_unpaired`` sort across the batch: their per-example losses are in sorted order,
  only their mean is meaningful, and it depends on how the batch is split into micro-batches.

Not reproduced: TRL's ``f_divergence_type`` other than reverse KL, ``ld_alpha`` (compute the
log-probs accordingly), WPO ``use_weighting``, CPO's AlphaPO ``alpha``, and the ``sft`` loss type
(token-level; use the trainer's ``sft`` objective).

jaxevo's own entry ``fdpo`` (DPSE frequency-aware DPO, METHODS.md §4.2) and the helper
:func:`frequency_weights` live here too, as do the TRL-named batch metrics
(:func:`preference_metrics`, summable over micro-batches, and :func:`finalize_metrics`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax.nn import log_sigmoid

from jaxevo.errors import ConfigError
from jaxevo.registry import Registry, typed

Array = jax.Array
LossOut = tuple[Array, Array, Array]
LossFn = Callable[..., LossOut]

# avg log-probs at or above this are clamped before log(1 - exp(x)) in ORPO, so that a sequence the
# model predicts with probability ~1 gives a finite loss and zero (not NaN/inf) gradient. TRL has no
# clamp; the results agree whenever the per-token average probability is below 1 - 1e-6.
_LOG1MEXP_MAX = -1e-6

LENGTH_KEYS = ("chosen_lengths", "rejected_lengths")


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """A registered preference loss and what it needs besides the policy log-probs [B].

    The trainer reads these declarations (whether to compute reference log-probs, which keywords
    to pass); nothing inspects ``fn``'s signature.
    """

    name: str
    fn: LossFn  # fn(chosen, rejected, ref_chosen, ref_rejected, **keywords) -> LossOut
    needs_reference: bool = True  # False: ref_chosen / ref_rejected are ignored (may be None)
    needs_lengths: bool = False  # takes chosen_lengths / rejected_lengths [B] (response tokens)
    hparams: tuple[str, ...] = ("beta",)  # keyword hyperparameters it takes from the config
    data: tuple[str, ...] = ()  # per-example [B] keyword arrays it takes from the data

    @property
    def keywords(self) -> tuple[str, ...]:
        """Every keyword argument ``fn`` takes."""
        return self.hparams + (LENGTH_KEYS if self.needs_lengths else ()) + self.data


#: name -> `LossSpec`; add one with `register`.
PREFERENCE_LOSSES: Registry[LossSpec] = Registry("preference loss", adapt=typed(
    LossSpec, "decorate the function with @jaxevo.losses.register(name, needs_reference=...)"))


def register(name: str, *aliases: str, needs_reference: bool = True, needs_lengths: bool = False,
             hparams: tuple[str, ...] = ("beta",), data: tuple[str, ...] = (),
             replace: bool = False) -> Callable[[LossFn], LossFn]:
    """Decorator: add ``fn`` to :data:`PREFERENCE_LOSSES` as a `LossSpec` declaring its needs
    (a taken name is a `jaxevo.registry.RegistryError`). Returns ``fn`` unchanged."""

    def deco(fn: LossFn) -> LossFn:
        spec = LossSpec(name, fn, needs_reference, needs_lengths, tuple(hparams), tuple(data))
        PREFERENCE_LOSSES.add(name, spec, *aliases, replace=replace)
        return fn

    return deco


def _f32(x: Any) -> Array:
    return jnp.asarray(x, jnp.float32)


def _is_number(x: Any) -> bool:
    """True for a concrete Python number (hyperparameter checks are skipped for traced values)."""
    return isinstance(x, (int, float))


def _logratios(c, r, rc, rr) -> tuple[Array, Array]:
    return _f32(c) - _f32(rc), _f32(r) - _f32(rr)


def _dpo_rewards(beta, chosen_lr: Array, rejected_lr: Array) -> tuple[Array, Array]:
    return (
        jax.lax.stop_gradient(beta * chosen_lr),
        jax.lax.stop_gradient(beta * rejected_lr),
    )


def _lengths(x: Any, name: str) -> Array:
    if x is None:
        raise ConfigError(f"this preference loss needs `{name}` (response token counts [B])")
    return jnp.maximum(_f32(x), 1.0)


# --------------------------------------------------------------------------- DPO family (DPOTrainer)


@register("sigmoid")
def sigmoid_loss(c, r, rc, rr, *, beta: float = 0.1) -> LossOut:
    """DPO: ``−logσ(β·h)``, ``h = (logp_w − ref_w) − (logp_l − ref_l)``."""
    clr, rlr = _logratios(c, r, rc, rr)
    return (-log_sigmoid(beta * (clr - rlr)), *_dpo_rewards(beta, clr, rlr))


@register("hinge")
def hinge_loss(c, r, rc, rr, *, beta: float = 0.1) -> LossOut:
    """SLiC hinge: ``relu(1 − β·h)``."""
    clr, rlr = _logratios(c, r, rc, rr)
    return (jax.nn.relu(1.0 - beta * (clr - rlr)), *_dpo_rewards(beta, clr, rlr))


@register("ipo", needs_lengths=True)
def ipo_loss(c, r, rc, rr, *, beta: float = 0.1, chosen_lengths=None, rejected_lengths=None) -> LossOut:
    """IPO (β = τ): ``(Δ_w/|y_w| − Δ_l/|y_l| − 1/(2β))²`` with per-token averaged log-ratios."""
    clr, rlr = _logratios(c, r, rc, rr)
    delta = clr / _lengths(chosen_lengths, "chosen_lengths") - rlr / _lengths(
        rejected_lengths, "rejected_lengths"
    )
    return ((delta - 1.0 / (2.0 * beta)) ** 2, *_dpo_rewards(beta, clr, rlr))


@register("sigmoid_norm", needs_lengths=True)
def sigmoid_norm_loss(
    c, r, rc, rr, *, beta: float = 0.1, chosen_lengths=None, rejected_lengths=None
) -> LossOut:
    """Length-normalised DPO: ``−logσ(β·(Δ_w/|y_w| − Δ_l/|y_l|))``."""
    clr, rlr = _logratios(c, r, rc, rr)
    delta = clr / _lengths(chosen_lengths, "chosen_lengths") - rlr / _lengths(
        rejected_lengths, "rejected_lengths"
    )
    return (-log_sigmoid(beta * delta), *_dpo_rewards(beta, clr, rlr))


@register("robust", hparams=("beta", "label_smoothing"))
def robust_loss(c, r, rc, rr, *, beta: float = 0.1, label_smoothing: float = 0.0) -> LossOut:
    """Robust DPO (unbiased under label-flip rate ε):
    ``[−(1−ε)·logσ(βh) + ε·logσ(−βh)] / (1 − 2ε)``, ε ∈ [0, 0.5)."""
    eps = label_smoothing
    if _is_number(eps) and not 0.0 <= eps < 0.5:
        raise ConfigError(f"robust loss needs 0 <= label_smoothing < 0.5, got {eps}")
    clr, rlr = _logratios(c, r, rc, rr)
    z = beta * (clr - rlr)
    clean = -(1.0 - eps) * log_sigmoid(z)
    flipped = -eps * log_sigmoid(-z)
    return ((clean - flipped) / (1.0 - 2.0 * eps), *_dpo_rewards(beta, clr, rlr))


@register("cdpo", hparams=("beta", "label_smoothing"))
def cdpo_loss(c, r, rc, rr, *, beta: float = 0.1, label_smoothing: float = 0.0) -> LossOut:
    """Conservative DPO (not a TRL 1.16 DPOTrainer type; TRL < 1.0 ``sigmoid`` with label smoothing):
    ``−(1−ε)·logσ(βh) − ε·logσ(−βh)``."""
    eps = label_smoothing
    clr, rlr = _logratios(c, r, rc, rr)
    z = beta * (clr - rlr)
    return (-(1.0 - eps) * log_sigmoid(z) - eps * log_sigmoid(-z), *_dpo_rewards(beta, clr, rlr))


@register("exo_pair", hparams=("beta", "label_smoothing"))
def exo_pair_loss(c, r, rc, rr, *, beta: float = 0.1, label_smoothing: float = 1e-3) -> LossOut:
    """EXO-pref (K=2): ``KL(softmax(β·scores) || [1−ε, ε])``; needs ε > 0."""
    eps = label_smoothing
    if _is_number(eps) and not eps > 0.0:
        raise ConfigError(f"exo_pair needs label_smoothing > 0, got {eps}")
    clr, rlr = _logratios(c, r, rc, rr)
    z = beta * (clr - rlr)
    qw, log_qw = jax.nn.sigmoid(z), log_sigmoid(z)
    ql, log_ql = jax.nn.sigmoid(-z), log_sigmoid(-z)
    losses = qw * (log_qw - jnp.log1p(-_f32(eps))) + ql * (log_ql - jnp.log(_f32(eps)))
    return (losses, *_dpo_rewards(beta, clr, rlr))


@register("nca_pair")
def nca_pair_loss(c, r, rc, rr, *, beta: float = 0.1) -> LossOut:
    """NCA: ``−logσ(r_w) − ½logσ(−r_w) − ½logσ(−r_l)`` with ``r = β·logratio``."""
    clr, rlr = _logratios(c, r, rc, rr)
    cw, rl = beta * clr, beta * rlr
    losses = -log_sigmoid(cw) - 0.5 * log_sigmoid(-cw) - 0.5 * log_sigmoid(-rl)
    return (losses, *_dpo_rewards(beta, clr, rlr))


@register("bco_pair")
def bco_pair_loss(c, r, rc, rr, *, beta: float = 0.1) -> LossOut:
    """BCO (paired, no running-mean shift, as in TRL): ``−logσ(r_w) − logσ(−r_l)``."""
    clr, rlr = _logratios(c, r, rc, rr)
    return (-log_sigmoid(beta * clr) - log_sigmoid(-beta * rlr), *_dpo_rewards(beta, clr, rlr))


@register("sppo_hard")
def sppo_hard_loss(c, r, rc, rr, *, beta: float = 0.1) -> LossOut:
    """SPPO with hard probabilities: ``(Δ_w − 1/(2β))² + (Δ_l + 1/(2β))²``."""
    clr, rlr = _logratios(c, r, rc, rr)
    losses = (clr - 0.5 / beta) ** 2 + (rlr + 0.5 / beta) ** 2
    return (losses, *_dpo_rewards(beta, clr, rlr))


def _aot_from_delta(beta, delta: Array, eps) -> Array:
    return -log_sigmoid(beta * delta) * (1.0 - eps) - log_sigmoid(-beta * delta) * eps


@register("aot", hparams=("beta", "label_smoothing"))
def aot_loss(c, r, rc, rr, *, beta: float = 0.1, label_smoothing: float = 0.0) -> LossOut:
    """AOT (paired): sort policy and reference chosen−rejected log-ratios over the batch, then DPO."""
    clr, rlr = _logratios(c, r, rc, rr)
    delta = jnp.sort(_f32(c) - _f32(r)) - jnp.sort(_f32(rc) - _f32(rr))
    return (_aot_from_delta(beta, delta, label_smoothing), *_dpo_rewards(beta, clr, rlr))


@register("aot_unpaired", hparams=("beta", "label_smoothing"))
def aot_unpaired_loss(c, r, rc, rr, *, beta: float = 0.1, label_smoothing: float = 0.0) -> LossOut:
    """AOT (unpaired): sort chosen and rejected log-ratios over the batch separately, then DPO."""
    clr, rlr = _logratios(c, r, rc, rr)
    delta = jnp.sort(clr) - jnp.sort(rlr)
    return (_aot_from_delta(beta, delta, label_smoothing), *_dpo_rewards(beta, clr, rlr))


@register("apo_zero")
def apo_zero_loss(c, r, rc, rr, *, beta: float = 0.1) -> LossOut:
    """APO-zero: ``(1 − σ(r_w)) + σ(r_l)``."""
    clr, rlr = _logratios(c, r, rc, rr)
    losses = (1.0 - jax.nn.sigmoid(beta * clr)) + jax.nn.sigmoid(beta * rlr)
    return (losses, *_dpo_rewards(beta, clr, rlr))


@register("apo_down")
def apo_down_loss(c, r, rc, rr, *, beta: float = 0.1) -> LossOut:
    """APO-down: ``σ(r_w) + (1 − σ(β·h))``."""
    clr, rlr = _logratios(c, r, rc, rr)
    losses = jax.nn.sigmoid(beta * clr) + (1.0 - jax.nn.sigmoid(beta * (clr - rlr)))
    return (losses, *_dpo_rewards(beta, clr, rlr))


@register("discopop", hparams=("beta", "discopop_tau"))
def discopop_loss(c, r, rc, rr, *, beta: float = 0.1, discopop_tau: float = 0.05) -> LossOut:
    """DiscoPOP: ``(1−m)·(−logσ(βh)) + m·exp(−βh)`` with ``m = σ(βh/τ)``."""
    clr, rlr = _logratios(c, r, rc, rr)
    z = beta * (clr - rlr)
    m = jax.nn.sigmoid(z / discopop_tau)
    losses = -log_sigmoid(z) * (1.0 - m) + jnp.exp(-z) * m
    return (losses, *_dpo_rewards(beta, clr, rlr))


# --------------------------------------------------------------------------- reference-free


@register("simpo", needs_reference=False, needs_lengths=True,
          hparams=("beta", "simpo_gamma", "label_smoothing"))
def simpo_loss(
    c,
    r,
    rc=None,
    rr=None,
    *,
    beta: float = 0.1,
    simpo_gamma: float = 0.5,
    label_smoothing: float = 0.0,
    chosen_lengths=None,
    rejected_lengths=None,
) -> LossOut:
    """SimPO as TRL's CPOTrainer (``loss_type='simpo'``, ``alpha=0``); reference-free.

    ``a = logp / |y|``; ``z = β·(a_w − a_l − γ/β)``; ``losses = −(1−ε)logσ(z) − ε·logσ(−z)``;
    rewards ``β·a``. TRL's defaults are β=0.1, γ=0.5; the SimPO paper uses β≈2–2.5.
    (CPO's ``cpo_alpha`` NLL term: the ``preference`` objective's ``nll_weight=cpo_alpha``.)
    """
    del rc, rr
    aw = _f32(c) / _lengths(chosen_lengths, "chosen_lengths")
    al = _f32(r) / _lengths(rejected_lengths, "rejected_lengths")
    z = beta * ((aw - al) - simpo_gamma / beta)
    eps = label_smoothing
    losses = -log_sigmoid(z) * (1.0 - eps) - log_sigmoid(-z) * eps
    return losses, jax.lax.stop_gradient(beta * aw), jax.lax.stop_gradient(beta * al)


def log1mexp(x: Array) -> Array:
    """``log(1 − exp(x))`` for ``x < 0``, stable on both sides of ``−ln 2`` (NaN-free gradients)."""
    x = jnp.minimum(x, _LOG1MEXP_MAX)
    t = -0.6931471805599453
    small = x < t
    lo = jnp.log1p(-jnp.exp(jnp.where(small, x, t)))
    hi = jnp.log(-jnp.expm1(jnp.where(small, t, x)))
    return jnp.where(small, lo, hi)


@register("orpo", needs_reference=False, needs_lengths=True)
def orpo_loss(
    c, r, rc=None, rr=None, *, beta: float = 0.1, chosen_lengths=None, rejected_lengths=None
) -> LossOut:
    """ORPO's odds-ratio part (TRL ORPOTrainer ``odds_ratio_loss``, β = λ); reference-free.

    ``a = logp/|y|``; ``log_odds = (a_w − a_l) − (log1mexp(a_w) − log1mexp(a_l))``;
    ``losses = −β·logσ(log_odds)`` (TRL returns the negative of this and subtracts its mean);
    rewards ``β·a``. The full ORPO loss adds the chosen NLL with weight 1 (the trainer's
    ``preference`` objective with ``nll_weight=1``).
    """
    del rc, rr
    aw = _f32(c) / _lengths(chosen_lengths, "chosen_lengths")
    al = _f32(r) / _lengths(rejected_lengths, "rejected_lengths")
    log_odds = (aw - al) - (log1mexp(aw) - log1mexp(al))
    losses = -beta * log_sigmoid(log_odds)
    return losses, jax.lax.stop_gradient(beta * aw), jax.lax.stop_gradient(beta * al)


# --------------------------------------------------------------------------- DPSE (jaxevo)


@register("fdpo", hparams=("beta", "gamma"), data=("weights", "margin"))
def fdpo_loss(
    c, r, rc, rr, *, beta: float = 0.1, weights=None, margin=None, gamma: float = 0.0
) -> LossOut:
    """DPSE frequency-aware DPO (METHODS.md §4.2, a reconstruction):
    ``losses = −w · logσ(β·h − γ·m)``.

    ``weights`` [B]: per-example weights with mean 1 over the *data set* (see
    :func:`frequency_weights`; not renormalised per batch). ``margin`` [B]: satisfaction margin
    ``m(ΔS)`` (e.g. ``S_w − S_l``). ``weights=None, gamma=0`` is exactly ``sigmoid``.
    Rewards are DPO's ``β·logratio`` (unweighted).
    """
    clr, rlr = _logratios(c, r, rc, rr)
    z = beta * (clr - rlr)
    if margin is not None:
        z = z - gamma * _f32(margin)
    losses = -log_sigmoid(z)
    if weights is not None:
        losses = _f32(weights) * losses
    return (losses, *_dpo_rewards(beta, clr, rlr))


def frequency_weights(topic_ids: Any, alpha: float, *, topic_counts: Any = None,
                      num_topics: int | None = None) -> Array:
    """DPSE topic-frequency weights ``w_i ∝ f_{topic_i}^α``, normalised to mean 1 over the inputs.

    Args:
      topic_ids: int [B], topic of each example.
      alpha: ``> 0`` emphasises frequent topics, ``< 0`` balances toward rare ones, ``0`` gives 1s.
      topic_counts: [C] occurrences of each topic (e.g. over the interaction logs). When ``None``,
        counted over ``topic_ids`` themselves (needs ``num_topics`` under ``jit``).
      num_topics: number of topics C when counting (default ``max(topic_ids) + 1``).

    Returns: f32 [B] with mean exactly 1 (``f_c / mean_c f_c`` cancels in the normalisation).

    Compute these once over the whole preference set when building pairs, and feed the stored
    per-example weights to ``fdpo``; weights computed per micro-batch would depend on batching.
    """
    topic_ids = jnp.asarray(topic_ids, jnp.int32)
    if topic_counts is None:
        length = int(jnp.max(topic_ids)) + 1 if num_topics is None else num_topics
        topic_counts = jnp.bincount(topic_ids, length=length)
    freq = _f32(topic_counts)[topic_ids]
    w = jnp.where(freq > 0, freq, 1.0) ** alpha
    return w / jnp.mean(w)


# --------------------------------------------------------------------------- entry point & metrics


def preference_loss(
    loss_type: str,
    chosen_logps: Any,
    rejected_logps: Any,
    ref_chosen_logps: Any,
    ref_rejected_logps: Any,
    **hparams: Any,
) -> LossOut:
    """Per-pair losses and detached rewards, as TRL computes them for ``loss_type``.

    Args:
      loss_type: a key of :data:`PREFERENCE_LOSSES`.
      chosen_logps, rejected_logps: [B] summed response log-probs under the policy.
      ref_chosen_logps, ref_rejected_logps: [B] the same under the reference model
        (``None`` allowed for ``simpo`` / ``orpo``).
      **hparams: the loss's TRL-named hyperparameters (``beta``, ``label_smoothing``,
        ``simpo_gamma``, ``discopop_tau``; ``chosen_lengths`` / ``rejected_lengths`` for
        length-normalised losses; ``weights`` / ``margin`` / ``gamma`` for ``fdpo``).
        A hyperparameter the loss does not use is a :class:`ConfigError`.

    Returns: ``(losses [B], chosen_rewards [B], rejected_rewards [B])``, all f32; average
    ``losses`` over the batch for the training loss.
    """
    spec = PREFERENCE_LOSSES.get(loss_type, "preference loss_type")
    unknown = set(hparams) - set(spec.keywords)
    if unknown:
        raise ConfigError(
            f"loss_type {loss_type!r} does not take {sorted(unknown)}; it takes {sorted(spec.keywords)}"
        )
    return spec.fn(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, **hparams)


METRIC_NAMES = (
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
)


def preference_metrics(
    chosen_rewards: Any,
    rejected_rewards: Any,
    chosen_logps: Any,
    rejected_logps: Any,
    valid: Any = None,
) -> dict[str, Array]:
    """TRL's preference metrics as **sums** plus a ``count`` (so they add across micro-batches).

    Args: [B] rewards from :func:`preference_loss` and the [B] log-probs that were fed to it
      (TRL logs summed log-probs for DPO, averaged ones for SimPO/ORPO); ``valid`` [B] bool/0-1
      marks real (not padding) pairs.

    Returns: ``{name: Σ_b value_b for name in METRIC_NAMES, "count": Σ valid}``. Sum these dicts
    over micro-batches / devices (e.g. ``jax.tree.map(jnp.add, ...)`` or ``psum``), then call
    :func:`finalize_metrics` to get TRL's batch means. ``rewards/accuracies`` counts
    ``chosen > rejected`` strictly, as TRL does.
    """
    cr, rr_ = _f32(chosen_rewards), _f32(rejected_rewards)
    v = jnp.ones_like(cr) if valid is None else _f32(valid)
    values = {
        "rewards/chosen": cr,
        "rewards/rejected": rr_,
        "rewards/accuracies": (cr > rr_).astype(jnp.float32),
        "rewards/margins": cr - rr_,
        "logps/chosen": _f32(chosen_logps),
        "logps/rejected": _f32(rejected_logps),
    }
    out = {k: jax.lax.stop_gradient(jnp.sum(jnp.where(v > 0, x, 0.0))) for k, x in values.items()}
    out["count"] = jnp.sum(v)
    return out


def finalize_metrics(sums: Mapping[str, Any]) -> dict[str, Array]:
    """Turn summed metrics (with ``count``) into means; ``count`` itself is dropped."""
    n = jnp.maximum(_f32(sums["count"]), 1.0)
    return {k: _f32(v) / n for k, v in sums.items() if k != "count"}
