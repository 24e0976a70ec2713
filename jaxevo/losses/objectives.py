"""Recipe losses beyond a single preference pair (EVOLVE, SELF meta-skills) as pure functions.

The trainer computes log-probs of several *views* of each example in one batched forward
(:func:`jaxevo.losses.logprobs.token_logprobs`) and calls these through its objectives
(`jaxevo.train.objectives`). All inputs are per-sequence f32 arrays of shape [B]; every loss
returns ``(loss scalar f32, aux dict of scalars)``. Everything is jittable (the ``variant`` / flag
arguments are static Python values).

Batch reduction: pair- and example-level terms are means over the batch; token-level NLL terms
are token means (``Σ logp / Σ count``). Averaging micro-batch results is exact for the former when
micro-batches have equal size.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.nn import log_sigmoid

from jaxevo.errors import ConfigError

Array = jax.Array
Aux = dict[str, Array]


def _f32(x: Any) -> Array:
    return jnp.asarray(x, jnp.float32)


# --------------------------------------------------------------------------- NLL


def sequence_nll(logp_sum: Any, count: Any = None, *, per_token: bool = True) -> Array:
    """Per-example NLL [B] from summed log-probs: ``−sum/max(count,1)`` or ``−sum`` (per_token=False)."""
    s = _f32(logp_sum)
    if not per_token:
        return -s
    if count is None:
        raise ConfigError("sequence_nll(per_token=True) needs the token counts")
    return -s / jnp.maximum(_f32(count), 1.0)


def _token_mean_nll(logp_sum: Any, count: Any, what: str) -> Array:
    if count is None:
        raise ConfigError(f"the NLL term needs `{what}` (token counts [B])")
    return -jnp.sum(_f32(logp_sum)) / jnp.maximum(jnp.sum(_f32(count)), 1.0)


# --------------------------------------------------------------------------- EVOLVE (METHODS §2.2)


def _term_dpo(beta, pw, pl, rw, rl, nw, nl, p_hat, gamma) -> Array:
    return -log_sigmoid(beta * ((_f32(pw) - _f32(rw)) - (_f32(pl) - _f32(rl))))


def _term_ipo(beta, pw, pl, rw, rl, nw, nl, p_hat, gamma) -> Array:
    # (a): regression on the identity β·h = p(y_w ≻ y_l) − ½ ; p̂ = 1 gives β²·IPO(τ=β), unnormalised.
    h = (_f32(pw) - _f32(rw)) - (_f32(pl) - _f32(rl))
    return (beta * h - (_f32(p_hat) - 0.5)) ** 2


def _term_simpo(beta, pw, pl, rw, rl, nw, nl, p_hat, gamma) -> Array:
    # (c): reference-free, length-normalised (SimPO): −logσ(β(a_w − a_l) − γ).
    if nw is None or nl is None:
        raise ConfigError("EVOLVE variant 'simpo' needs the token counts of every view")
    aw = _f32(pw) / jnp.maximum(_f32(nw), 1.0)
    al = _f32(pl) / jnp.maximum(_f32(nl), 1.0)
    return -log_sigmoid(beta * (aw - al) - gamma)


_EVOLVE_TERMS = {"dpo": _term_dpo, "ipo": _term_ipo, "simpo": _term_simpo}


def evolve_loss(
    direct_chosen: Any,
    direct_rejected: Any,
    refine_chosen: Any,
    refine_rejected: Any,
    ref_direct_chosen: Any = None,
    ref_direct_rejected: Any = None,
    ref_refine_chosen: Any = None,
    ref_refine_rejected: Any = None,
    *,
    beta: float = 0.1,
    variant: str = "dpo",
    nll_weight: float = 0.0,
    direct_weight: float = 1.0,
    refine_weight: float = 1.0,
    target_prob: Any = 1.0,
    simpo_gamma: float = 0.5,
    direct_chosen_count: Any = None,
    direct_rejected_count: Any = None,
    refine_chosen_count: Any = None,
    refine_rejected_count: Any = None,
) -> tuple[Array, Aux]:
    """EVOLVE's refinement-aware preference loss (METHODS.md §2.2, default form [I]).

    Views (all [B] summed response log-probs, policy and reference):
      direct: ``y_w | x`` and ``y_l | x``;
      refine: ``y_w | x, y_l, z`` and ``y_l | x, y_l, z`` (z = refinement template). For the
      SRPO-style variant (b) build the rejected refine view as ``y_l | x, y_w, z`` instead — the
      loss is unchanged, only the view differs.

    ``loss = mean( direct_weight·T(direct) + refine_weight·T(refine) ) + nll_weight·NLL(y_w | x)``
    with the per-pair term ``T`` chosen by ``variant``:
      ``"dpo"``   ``−logσ(β·h)``, ``h = Δ(y_w) − Δ(y_l)``, ``Δ = logπ − logπ_ref`` (default);
      ``"ipo"``   (a) ``(β·h − (p̂ − ½))²`` with ``target_prob`` p̂ (scalar or [B], default 1);
      ``"simpo"`` (c) reference-free ``−logσ(β·(a_w − a_l) − γ)``, ``a = logp/count``, needs the
                  four ``*_count`` arguments; reference log-probs are ignored.
    (d) ``nll_weight > 0`` adds the token-mean NLL of ``y_w | x`` (needs ``direct_chosen_count``).

    Returns ``(loss, aux)``; aux: ``direct``, ``refine`` (mean terms), ``nll``, and the DPO-style
    rewards ``direct_margin`` / ``refine_margin`` = mean ``β·h`` (0-reference variants: β·(a_w−a_l)).
    """
    if variant not in _EVOLVE_TERMS:
        raise ConfigError(f"unknown EVOLVE variant {variant!r}; known: {sorted(_EVOLVE_TERMS)}")
    if variant != "simpo" and any(
        x is None for x in (ref_direct_chosen, ref_direct_rejected, ref_refine_chosen, ref_refine_rejected)
    ):
        raise ConfigError(f"EVOLVE variant {variant!r} needs the four reference log-probs")
    if variant == "simpo":
        zeros = jnp.zeros_like(_f32(direct_chosen))
        ref_direct_chosen = ref_direct_rejected = ref_refine_chosen = ref_refine_rejected = zeros
    term = _EVOLVE_TERMS[variant]
    direct = term(
        beta, direct_chosen, direct_rejected, ref_direct_chosen, ref_direct_rejected,
        direct_chosen_count, direct_rejected_count, target_prob, simpo_gamma,
    )
    refine = term(
        beta, refine_chosen, refine_rejected, ref_refine_chosen, ref_refine_rejected,
        refine_chosen_count, refine_rejected_count, target_prob, simpo_gamma,
    )
    d, r = jnp.mean(direct), jnp.mean(refine)
    if nll_weight:
        nll = _token_mean_nll(direct_chosen, direct_chosen_count, "direct_chosen_count")
    else:
        nll = jnp.zeros((), jnp.float32)
    loss = direct_weight * d + refine_weight * r + nll_weight * nll

    def margin(pw, pl, rw, rl, nw, nl):
        if variant == "simpo":
            return beta * (_f32(pw) / jnp.maximum(_f32(nw), 1.0) - _f32(pl) / jnp.maximum(_f32(nl), 1.0))
        return beta * ((_f32(pw) - _f32(rw)) - (_f32(pl) - _f32(rl)))

    aux = {
        "direct": d,
        "refine": r,
        "nll": nll,
        "direct_margin": jax.lax.stop_gradient(jnp.mean(margin(
            direct_chosen, direct_rejected, ref_direct_chosen, ref_direct_rejected,
            direct_chosen_count, direct_rejected_count))),
        "refine_margin": jax.lax.stop_gradient(jnp.mean(margin(
            refine_chosen, refine_rejected, ref_refine_chosen, ref_refine_rejected,
            refine_chosen_count, refine_rejected_count))),
    }
    return loss, aux


# --------------------------------------------------------------------------- SELF (METHODS §3.2)


def self_meta_loss(
    feedback_nll: Any,
    refine_nll: Any,
    direct_nll: Any,
    *,
    beta: float = 1.0,
    has_meta: Any = None,
) -> tuple[Array, Aux]:
    """SELF meta-skill loss: ``mean_b[ NLL(f | p, r) + NLL(r̂ | p, r, f) + β · NLL(r̂ | p) ]``.

    Args:
      feedback_nll, refine_nll, direct_nll: [B] per-example NLLs of the three views (from
        :func:`sequence_nll`; per-token or summed — the caller picks, consistently).
      beta: weight of the direct-answer term.
      has_meta: optional [B] bool/0-1; 0 marks plain QA examples ``(p, r̂)`` mixed into D_meta,
        which have only the direct view (their feedback/refine entries are ignored).

    Returns ``(loss, {"feedback", "refine", "direct"})`` (batch means of each term; the feedback and
    refine means are over meta examples only). The loss is normalised by the number of examples.
    """
    f, r, d = _f32(feedback_nll), _f32(refine_nll), _f32(direct_nll)
    meta = jnp.ones_like(d) if has_meta is None else _f32(has_meta)
    n = d.shape[0]
    f_sum = jnp.sum(jnp.where(meta > 0, f, 0.0))
    r_sum = jnp.sum(jnp.where(meta > 0, r, 0.0))
    loss = (f_sum + r_sum + beta * jnp.sum(d)) / n
    n_meta = jnp.maximum(jnp.sum(meta > 0), 1)
    return loss, {"feedback": f_sum / n_meta, "refine": r_sum / n_meta, "direct": jnp.mean(d)}
