"""``objective.token_alpha``: DPSE's token-frequency reading trained end to end (tiny fp32 Llama).

Every response log-prob sum, policy and precomputed reference alike, is Σ_t ω(y_t) log π(y_t)
with ω counted once over the whole preference set. The references here are independent: ω from
numpy over the records' characters (the test tokenizer has one token per character), token
log-probs from a plain causal forward with full logits.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxevo.config import load_config
from jaxevo.errors import ConfigError
from jaxevo.evolve.config import EvolveConfig
from jaxevo.lora.config import LoraSection
from jaxevo.models.transformer import Transformer
from jaxevo.plan import PlanConfig, plan_train
from jaxevo.sharding import make_mesh
from jaxevo.train.builder import build
from jaxevo.train.config import (DataSection, LogSection, ModelSection, ObjectiveSection,
                                 OptimSection, TrainConfig)
from jaxevo.train.reference import fingerprint
from jaxevo.train.step import fetch, finalize_metrics, to_global
from tests.train.helpers import pref_records, pretrained

ROOT = Path(__file__).resolve().parents[2]
DPSE = ROOT / "configs" / "dpse.yaml"
ALPHA = 0.7
BETA = 0.5
LN2 = float(np.log(np.float32(2.0)))


def _records(weights: bool):
    rows = pref_records(8)
    if weights:  # fdpo's pair weights (mean 1), to show the two readings compose
        for r, w in zip(rows, [0.5, 1.5, 1.0, 0.8, 1.2, 1.0, 0.7, 1.3]):
            r["weight"] = w
    return rows


def _cfg(out, *, token_alpha, loss_type="fdpo", micro=None, precompute_ref=True, lora_rank=0):
    return TrainConfig(
        lora=LoraSection(rank=lora_rank, alpha=2.0 * lora_rank),
        out_dir=str(out), steps=2, batch_size=4, micro_batch_size=micro, seed=0,
        model=ModelSection(dtype="float32", param_dtype="float32", rounding="nearest"),
        data=DataSection(max_length=32, chat_template=False, pad_to_multiple=8, shuffle=False),
        objective=ObjectiveSection(name="preference", loss_type=loss_type, beta=BETA,
                                   token_alpha=token_alpha, precompute_ref=precompute_ref),
        optim=OptimSection(lr=1e-2, schedule="constant", clip_norm=None),
        log=LogSection(tensorboard=False, progress=False))


def _copy(tree):
    return jax.tree.map(lambda x: np.array(x, copy=True), fetch(tree))  # the state is donated


def _run(cfg, records, steps=2):
    """(trainer, [metrics of each step], [params before each step and after the last])."""
    t = build(cfg, pretrained=pretrained(0, dtype="float32"), records=records)
    state, hist, params = t.state, [], [_copy(t.state.params)]
    for s in range(steps):
        state, raw = t.step(state, to_global(t.stream.batch(s), t.mesh))
        hist.append(finalize_metrics(fetch(raw)))
        params.append(_copy(state.params))
    return t, hist, params


# ----------------------------------------------------------------------------- independent refs


def _numpy_omega(records, vocab_size: int, eos: int, alpha: float) -> np.ndarray:
    """ω from the records' text: one token per character (+ eos), over chosen and rejected."""
    tok = pretrained(0).tokenizer
    counts = np.zeros(vocab_size)
    for r in records:
        for text in (r["chosen"], r["rejected"]):
            for i in [tok.convert_tokens_to_ids(ch) for ch in text] + [eos]:
                counts[i] += 1
    seen = counts > 0
    raw = np.where(seen, np.where(seen, counts, 1.0) ** -alpha, 0.0)
    return np.where(seen, raw * counts.sum() / (counts * raw).sum(), 1.0)


@functools.partial(jax.jit, static_argnums=1)
def _token_logps(params, cfg, tokens, labels):
    """[N, T] log π(label_t) at the labelled positions (0 elsewhere), full f32 logits."""
    t = tokens.shape[1]
    mask = jnp.tril(jnp.ones((t, t), bool))[None]
    logits, _ = Transformer(cfg).apply({"params": params}, tokens, jnp.arange(t)[None], mask)
    lp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
    picked = jnp.take_along_axis(lp, jnp.maximum(labels, 0)[..., None], -1)[..., 0]
    return jnp.where(labels >= 0, picked, 0.0)


def _weighted_sums(params, t, view, idx, omega) -> np.ndarray:
    a = t.stream.data.arrays
    tokens, labels = a[f"{view}/tokens"][idx], a[f"{view}/labels"][idx]
    tlp = np.asarray(_token_logps(params, t.model_cfg, jnp.asarray(tokens), jnp.asarray(labels)),
                     np.float64)
    w = omega[np.maximum(labels, 0)] * (labels >= 0)
    return (w * tlp).sum(-1)


def _log_sigmoid(z):
    return -np.logaddexp(0.0, -z)


# ----------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("loss_type", ["fdpo", "sigmoid"])
def test_alpha_zero_is_the_plain_loss_exactly(tmp_path, loss_type):
    """token_alpha=0 (ω = 1) gives bitwise the losses, gradient norms and updated weights of the
    loss without token weights (fdpo with its pair weights; sigmoid)."""
    recs = _records(weights=loss_type == "fdpo")
    _, plain, p_plain = _run(_cfg(tmp_path / "a", token_alpha=None, loss_type=loss_type), recs)
    _, zero, p_zero = _run(_cfg(tmp_path / "b", token_alpha=0.0, loss_type=loss_type), recs)
    for a, b in zip(plain, zero):
        assert a["loss"] == b["loss"] and a["grad_norm"] == b["grad_norm"]
    assert plain[1]["loss"] != pytest.approx(LN2, abs=1e-4)  # step 2 is not the trivial ln 2
    for x, y in zip(jax.tree.leaves(p_plain[-1]), jax.tree.leaves(p_zero[-1])):
        np.testing.assert_array_equal(x, y)


def test_reference_sums_are_weighted_and_step_one_is_ln2(tmp_path):
    """The precomputed reference sums are Σ ω log π_ref (numpy ω, full-logit forward), not the
    plain sums; with reference = policy the first step's loss is ln 2 and its margins 0."""
    recs = _records(weights=False)
    t, hist, params = _run(_cfg(tmp_path, token_alpha=ALPHA), recs, steps=1)
    omega = _numpy_omega(recs, t.model_cfg.vocab_size, t.tokenizer.eos_token_id, ALPHA)
    all_rows = np.arange(len(recs))
    ones = np.ones_like(omega)
    for view in ("chosen", "rejected"):
        ref = t.stream.data.arrays[f"ref/{view}"]
        want = _weighted_sums(params[0], t, view, all_rows, omega)
        np.testing.assert_allclose(ref, want, rtol=1e-5, atol=1e-5)
        plain = _weighted_sums(params[0], t, view, all_rows, ones)
        assert np.abs(ref - plain).max() > 0.1  # the weighting is not a no-op here
    assert hist[0]["loss"] == pytest.approx(LN2, abs=1e-6)
    assert hist[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    # logps/chosen is the batch mean of the weighted policy sums, equal to the reference's
    idx = t.stream.indices(0)
    assert hist[0]["logps/chosen"] == pytest.approx(
        float(t.stream.data.arrays["ref/chosen"][idx].mean()), abs=1e-5)


@pytest.mark.parametrize("loss_type", ["fdpo", "sigmoid"])
def test_step_loss_matches_numpy_reference(tmp_path, loss_type):
    """Step 2 (the policy moved, the reference did not): the step's loss equals
    mean_i −w_i·logσ(β·[(Σω lp_w − Σω lp_w^ref) − (Σω lp_l − Σω lp_l^ref)]) computed from the
    model's own token log-probs and ω from the whole data set (the batch holds half of it)."""
    recs = _records(weights=loss_type == "fdpo")
    t, hist, params = _run(_cfg(tmp_path, token_alpha=ALPHA, loss_type=loss_type), recs)
    omega = _numpy_omega(recs, t.model_cfg.vocab_size, t.tokenizer.eos_token_id, ALPHA)
    idx = t.stream.indices(1)
    h = sum(sign * (_weighted_sums(params[1], t, v, idx, omega)
                    - _weighted_sums(params[0], t, v, idx, omega))
            for v, sign in (("chosen", 1.0), ("rejected", -1.0)))
    w = np.asarray([recs[i].get("weight", 1.0) for i in idx]) if loss_type == "fdpo" else 1.0
    want = float(np.mean(-w * _log_sigmoid(BETA * h)))
    assert abs(want - LN2) > 1e-3  # the check is not the trivial first step
    assert hist[1]["loss"] == pytest.approx(want, abs=1e-5)


def test_micro_batches_and_reference_forward_change_nothing(tmp_path):
    """ω is the data set's, not a batch's: 2 micro-batches of 2 give the loss of 1 batch of 4, and
    a reference forward in every step (precompute_ref=false) the loss of the precomputed sums."""
    recs = _records(weights=True)
    _, one, _ = _run(_cfg(tmp_path / "one", token_alpha=ALPHA), recs)
    _, two, _ = _run(_cfg(tmp_path / "two", token_alpha=ALPHA, micro=2), recs)
    _, fwd, _ = _run(_cfg(tmp_path / "fwd", token_alpha=ALPHA, precompute_ref=False), recs)
    for other in (two, fwd):
        for a, b in zip(one, other):
            assert b["loss"] == pytest.approx(a["loss"], abs=1e-6)
            assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-5)
    # step 1, reference = policy: every pair's loss is ln 2, times its pair weight (no shuffle)
    assert fwd[0]["loss"] == pytest.approx(np.mean([r["weight"] for r in recs[:4]]) * LN2, abs=1e-6)
    assert fwd[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)


def test_lora_steps_pass_omega_with_the_frozen_base(tmp_path):
    """LoRA (the base is the step's 4th argument, ω its 5th): with B = 0 the first step's loss is
    ln 2, and the per-step reference forward gives the precomputed weighted sums' losses."""
    recs = _records(weights=False)
    t, pre, _ = _run(_cfg(tmp_path / "pre", token_alpha=ALPHA, lora_rank=4), recs)
    _, fwd, _ = _run(_cfg(tmp_path / "fwd", token_alpha=ALPHA, lora_rank=4, precompute_ref=False),
                     recs)
    omega = _numpy_omega(recs, t.model_cfg.vocab_size, t.tokenizer.eos_token_id, ALPHA)
    base = _copy(t.base)
    np.testing.assert_allclose(t.stream.data.arrays["ref/chosen"],
                               _weighted_sums(base, t, "chosen", np.arange(8), omega), atol=1e-5)
    assert pre[0]["loss"] == pytest.approx(LN2, abs=1e-6) and fwd[0]["loss"] == pre[0]["loss"]
    assert pre[1]["loss"] != pytest.approx(LN2, abs=1e-4)
    assert fwd[1]["loss"] == pytest.approx(pre[1]["loss"], abs=1e-6)


def test_cached_reference_is_keyed_by_omega(tmp_path):
    """Unweighted reference sums cached in out_dir are never read back as weighted ones."""
    t = build(_cfg(tmp_path, token_alpha=None), pretrained=pretrained(0, dtype="float32"),
              records=_records(False))
    plain = t.stream.data.arrays["ref/chosen"].copy()
    t2 = build(_cfg(tmp_path, token_alpha=ALPHA), pretrained=pretrained(0, dtype="float32"),
               records=_records(False))
    assert np.abs(t2.stream.data.arrays["ref/chosen"] - plain).max() > 0.1
    data, views = t.stream.data, ("chosen", "rejected")
    assert fingerprint(data, views, "m") != fingerprint(data, views, "m", np.ones(128, np.float32))


def test_plan_compiles_the_weighted_step():
    """`jaxevo plan` lowers the step `train` runs, ω argument included."""
    t = TrainConfig(batch_size=2, objective=ObjectiveSection(name="preference", token_alpha=0.5))
    plan = plan_train(PlanConfig(train=t, seq_len=16), pretrained(0).cfg, make_mesh((1, -1, 1)))
    assert plan["cost"]["flops"] > 0 and plan["tokens_per_step"] == 2 * 16 * 2


# ----------------------------------------------------------------------------- config


def test_bad_token_alpha_is_a_config_error(tmp_path):
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="objective.token_alpha"):
            ObjectiveSection(name="preference", token_alpha=bad)
    pre = pretrained(0, dtype="float32")
    for kw, why in ((dict(name="sft"), "objective 'sft' does not read"),
                    (dict(name="preference", loss_type="simpo"), "loss_type 'simpo'"),
                    (dict(name="preference", loss_type="ipo"), "loss_type 'ipo'")):
        cfg = TrainConfig(out_dir=str(tmp_path / kw.get("loss_type", "sft")),
                          objective=ObjectiveSection(**kw, token_alpha=0.5))
        with pytest.raises(ConfigError, match=f"objective.token_alpha=0.5.*{why}"):
            build(cfg, pretrained=pre, records=_records(False))


def test_dpse_preference_phase_selects_it():
    cfg = load_config(EvolveConfig, DPSE, ["preference.objective.token_alpha=0.5"])
    assert cfg.preference.objective.token_alpha == 0.5
    assert load_config(EvolveConfig, DPSE, []).preference.objective.token_alpha is None
    with pytest.raises(ConfigError, match="objective.token_alpha"):
        load_config(EvolveConfig, DPSE, ["preference.objective.token_alpha=-1"])
    with pytest.raises(ConfigError, match=r"^preference\.objective\.token_alpha=0.5.*'orpo'"):
        load_config(EvolveConfig, DPSE, ["preference.objective.token_alpha=0.5",
                                                        "preference.objective.loss_type=orpo"])
    with pytest.raises(ConfigError, match=r"^sft\.objective\.token_alpha"):
        load_config(EvolveConfig, DPSE, ["sft.objective.token_alpha=0.5"])
