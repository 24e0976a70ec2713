"""What `jaxevo plan` adds for an online (GRPO-family) recipe: the `policy` objective's batch, the
old/reference log-prob forward, and the colocated peak of sampling and training on one mesh.

An online step holds, on the same devices, the train state (f32 params + Adam moments), the
sampler's prepared decode weights and KV cache (made from those params), and — when β > 0 — the
frozen reference params. The sampler's programs and the train step run one after the other, so
their temporaries never coexist: the step's peak is the resident bytes plus the larger temp.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxevo.train.config import ObjectiveSection


def needs_logps_forward(hp: ObjectiveSection) -> bool:
    """Whether a step also runs a no-grad forward for token log-probs: reference (β > 0) or old
    log-probs (μ = ``hparams["iterations"]`` > 1)."""
    return hp.name == "policy" and (hp.beta != 0 or int(hp.hparams.get("iterations", 1)) > 1)


def policy_extras(hp: ObjectiveSection, b: int, seq: int, sharding) -> dict[str, Any]:
    """Abstract extras of a rollout batch: ``advantage`` [b], and [b, seq] old / reference token
    log-probs when the settings need them (see `jaxevo.train.rollout`)."""
    sds = lambda shape: jax.ShapeDtypeStruct(shape, jnp.float32, sharding=sharding)  # noqa: E731
    extras = {"advantage": sds((b,))}
    if hp.beta != 0:
        extras["ref_token_lp"] = sds((b, seq))
    if int(hp.hparams.get("iterations", 1)) > 1:
        extras["old_token_lp"] = sds((b, seq))
    return extras


def colocated(plan: dict[str, Any], hbm_bytes: float, beta: float) -> dict[str, Any]:
    """Per-device bytes of one online step with sampler and trainer on the same devices."""
    tr, sm = plan["train"], plan["sample"]
    sb = tr["state_bytes"]
    resident = {"train_state": sb["params"] + sb["opt_state"],
                "reference_params": sb["params"] if beta else 0.0,  # loaded like the policy (f32)
                "sampler_weights": sm["params_bytes_per_device"],
                "kv_cache": sm["kv_cache_bytes_per_device"]}
    temps = {"train_step": tr["memory"].get("temp", 0.0),
             "logps_forward": tr.get("logps_forward", {}).get("temp", 0.0),
             "prefill": sm["prefill"]["memory"].get("temp", 0.0),
             "decode": sm["decode"]["memory"].get("temp", 0.0)}
    peak = sum(resident.values()) + max(temps.values()) + sb["batch"]
    return {"resident": resident, "temps": temps, "peak_estimate": peak, "fits": peak <= hbm_bytes,
            "hbm_bytes": hbm_bytes}
