"""What `jaxevo plan` adds for an online (GRPO-family) recipe: the `policy` objective's batch (a row
per completion, or a prompt and K of its completions a row: `grpo.share_prompt`), the
old/reference log-prob forward, and the colocated peak of sampling and training on one mesh.

An online step holds, on the same devices, the train state (f32 params + Adam moments), the
sampler's prepared decode weights and KV cache (made from those params), and — when β > 0 — the
frozen reference params. The sampler's programs and the train step run one after the other, so
their temporaries never coexist: the step's peak is the resident bytes plus the larger temp.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jaxevo.errors import ConfigError
from jaxevo.train.config import ObjectiveSection, TrainConfig
from jaxevo.train.rollout import refuse_windowed_rows


@dataclasses.dataclass(frozen=True)
class PolicyRows:
    """The shape of an online update's batch: ``rows`` x ``width`` tokens, micro-batches of
    ``micro`` rows, ``per_row`` completions a row, each read back at ``completion`` columns
    (``rollout.group_batch``; 0 for a row per completion)."""

    rows: int
    micro: int
    width: int
    per_row: int = 1
    completion: int = 0


def policy_rows(t: TrainConfig, seq: int, share: int, prompt_len: int, new_tokens: int, mcfg) -> PolicyRows:
    """The update's rows as the `grpo` stage lays them out (`online.train_config`): with
    ``share`` K > 1, ``t.batch_size`` completions (as `grpo`'s prompts x group size) make
    batch / K rows of the prompt's ``prompt_len`` - 1 tokens and K x (1 + C) more, C the
    completion length (``max_completion_length`` or ``new_tokens``), both rounded up to
    ``t.data.pad_to_multiple``; ``seq`` is the row length otherwise."""
    micro = t.micro_batch_size or t.batch_size
    if share == 1:
        return PolicyRows(t.batch_size, micro, seq)
    if t.objective.name != "policy":
        raise ConfigError(f"share_prompt={share}: only the online objective `policy` lays completions "
                          f"out several a row, not {t.objective.name!r}; set share_prompt: 1")
    if share < 1 or t.batch_size % share or micro % share:
        raise ConfigError(f"share_prompt={share} (completions a row) must be >= 1 and divide "
                          f"train.batch_size={t.batch_size} and train.micro_batch_size={micro}")
    refuse_windowed_rows(mcfg, share, "share_prompt")
    m = max(1, t.data.pad_to_multiple)
    up = lambda n: -(-n // m) * m  # noqa: E731
    c = int(t.objective.hparams.get("max_completion_length", new_tokens))
    return PolicyRows(t.batch_size // share, micro // share, up(prompt_len - 1 + share * (1 + c)), share, up(c))


def needs_logps_forward(hp: ObjectiveSection) -> bool:
    """Whether a step also runs a no-grad forward for token log-probs: reference (β > 0) or old
    log-probs (μ = ``hparams["iterations"]`` > 1)."""
    return hp.name == "policy" and (hp.beta != 0 or int(hp.hparams.get("iterations", 1)) > 1)


def policy_extras(hp: ObjectiveSection, rows: PolicyRows, sharding) -> dict[str, Any]:
    """Abstract extras of a rollout batch (see `jaxevo.train.rollout`): ``advantage`` [b] (or
    [b, K] and the completions' ``columns`` [b, K, C] when a row holds K), and [b, width] old /
    reference token log-probs when the settings need them."""
    b, seq, k = rows.rows, rows.width, rows.per_row
    sds = lambda shape, dt=jnp.float32: jax.ShapeDtypeStruct(shape, dt, sharding=sharding)  # noqa: E731
    extras = {"advantage": sds((b,))}
    if k > 1:
        extras = {"advantage": sds((b, k)), "columns": sds((b, k, rows.completion), jnp.int32)}
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
