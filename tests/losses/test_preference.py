"""Preference registry behaviour beyond the TRL goldens: fdpo, weights, metrics, errors, grads,
declared needs."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxevo.errors import ConfigError
from jaxevo.losses import (
    METRIC_NAMES,
    PREFERENCE_LOSSES,
    finalize_metrics,
    frequency_weights,
    log1mexp,
    preference_loss,
    preference_metrics,
    register,
)
from jaxevo.registry import RegistryError

B = 8


def _pairs(seed=0, b=B):
    k = jax.random.split(jax.random.PRNGKey(seed), 4)
    c = -jax.random.uniform(k[0], (b,), minval=5.0, maxval=40.0)
    r = -jax.random.uniform(k[1], (b,), minval=5.0, maxval=40.0)
    rc = c + jax.random.normal(k[2], (b,)) * 2.0
    rr = r + jax.random.normal(k[3], (b,)) * 2.0
    return c, r, rc, rr


def test_fdpo_reduces_to_sigmoid():
    c, r, rc, rr = _pairs()
    ref = preference_loss("sigmoid", c, r, rc, rr, beta=0.2)
    for kw in ({}, {"weights": jnp.ones(B)}, {"margin": jnp.arange(B) * 1.0, "gamma": 0.0}):
        out = preference_loss("fdpo", c, r, rc, rr, beta=0.2, **kw)
        for a, b in zip(out, ref):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_fdpo_weights_scale_gradients_per_example():
    c, r, rc, rr = _pairs(1)
    w = jnp.array([0.5, 1.5, 1.0, 2.0, 0.25, 0.75, 1.0, 1.0])

    def per_example_grads(weights):
        def f(c_):
            return jnp.sum(preference_loss("fdpo", c_, r, rc, rr, beta=0.1, weights=weights)[0])
        return jax.grad(f)(c)

    g1, gw = per_example_grads(None), per_example_grads(w)
    np.testing.assert_allclose(np.asarray(gw), np.asarray(w * g1), rtol=1e-6)
    assert np.all(np.asarray(g1) < 0)  # raising the chosen log-prob lowers the loss


def test_fdpo_margin_is_subtracted_inside_sigmoid():
    c, r, rc, rr = _pairs(2)
    m = jnp.linspace(0.0, 1.0, B)
    out, _, _ = preference_loss("fdpo", c, r, rc, rr, beta=0.1, margin=m, gamma=0.7)
    h = (c - rc) - (r - rr)
    np.testing.assert_allclose(np.asarray(out), np.asarray(-jax.nn.log_sigmoid(0.1 * h - 0.7 * m)), rtol=1e-6)
    base, _, _ = preference_loss("sigmoid", c, r, rc, rr, beta=0.1)
    assert np.all(np.asarray(out)[1:] > np.asarray(base)[1:])  # a required margin makes the loss larger


def test_frequency_weights():
    topics = jnp.array([0, 0, 0, 1, 2, 2, 0, 1])  # counts 4, 2, 2
    w = frequency_weights(topics, 1.0)
    np.testing.assert_allclose(float(jnp.mean(w)), 1.0, rtol=1e-6)
    assert float(w[0]) == pytest.approx(2 * float(w[3]))
    inv = frequency_weights(topics, -1.0)
    assert float(inv[3]) == pytest.approx(2 * float(inv[0]))
    np.testing.assert_allclose(np.asarray(frequency_weights(topics, 0.0)), np.ones(B))
    # global counts (e.g. over the logs) instead of counts within the given examples
    g = frequency_weights(jnp.array([0, 1]), 0.5, topic_counts=jnp.array([9.0, 1.0]))
    np.testing.assert_allclose(np.asarray(g), np.array([1.5, 0.5]), rtol=1e-6)
    jitted = jax.jit(lambda t: frequency_weights(t, 1.0, num_topics=3))(topics)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(w), rtol=1e-6)


def test_metrics_sum_over_micro_batches():
    c, r, rc, rr = _pairs(3)
    _, cr, rr_ = preference_loss("sigmoid", c, r, rc, rr, beta=0.1)
    full = finalize_metrics(preference_metrics(cr, rr_, c, r))
    parts = [preference_metrics(cr[s], rr_[s], c[s], r[s]) for s in (slice(0, 3), slice(3, 8))]
    summed = jax.tree.map(jnp.add, *parts)
    merged = finalize_metrics(summed)
    assert set(full) == set(METRIC_NAMES)
    for k in METRIC_NAMES:
        np.testing.assert_allclose(float(merged[k]), float(full[k]), rtol=1e-6)
    np.testing.assert_allclose(float(full["rewards/margins"]), float(jnp.mean(cr - rr_)), rtol=1e-6)
    # padding pairs are excluded
    valid = jnp.array([1, 1, 1, 1, 1, 1, 0, 0])
    padded = finalize_metrics(preference_metrics(cr, rr_, c, r, valid))
    np.testing.assert_allclose(float(padded["logps/chosen"]), float(jnp.mean(c[:6])), rtol=1e-6)


def test_rewards_are_detached_and_everything_jits():
    c, r, rc, rr = _pairs(4)
    lens = {"chosen_lengths": jnp.full(B, 10.0), "rejected_lengths": jnp.full(B, 12.0)}
    needs_len = {"ipo", "sigmoid_norm", "simpo", "orpo"}
    for name in PREFERENCE_LOSSES:
        hp = dict(lens) if name in needs_len else {}
        if name == "exo_pair":
            hp["label_smoothing"] = 0.01

        def f(c_, hp=hp, name=name):
            losses, cr, rr_ = preference_loss(name, c_ / 8.0, r / 8.0, rc / 8.0, rr / 8.0, **hp)
            return jnp.sum(cr + rr_), jnp.mean(losses)

        g_rewards = jax.grad(lambda x: f(x)[0])(c)
        np.testing.assert_array_equal(np.asarray(g_rewards), 0.0, err_msg=name)
        g_loss = jax.jit(jax.grad(lambda x: f(x)[1]))(c)
        assert np.all(np.isfinite(np.asarray(g_loss))), name


def test_orpo_finite_at_probability_one():
    c = jnp.array([0.0, -1e-9, -0.5, -3.0])
    r = jnp.array([-2.0, -2.0, -0.1, -0.2])
    ones = jnp.ones(4)
    f = lambda x: jnp.sum(preference_loss("orpo", x, r, None, None, chosen_lengths=ones, rejected_lengths=ones)[0])  # noqa: E731
    assert np.isfinite(float(f(c)))
    assert np.all(np.isfinite(np.asarray(jax.grad(f)(c))))
    x = jnp.array([-1e-3, -0.5, -0.7, -2.0, -20.0])
    np.testing.assert_allclose(np.asarray(log1mexp(x)), np.log(-np.expm1(np.asarray(x, np.float64))), rtol=1e-6)


def test_errors():
    c, r, rc, rr = _pairs()
    with pytest.raises(ConfigError, match="unknown preference loss_type"):
        preference_loss("dpo", c, r, rc, rr)
    with pytest.raises(ConfigError, match="does not take"):
        preference_loss("sigmoid", c, r, rc, rr, label_smoothing=0.1)  # TRL 1.16 sigmoid ignores it
    with pytest.raises(ConfigError, match="chosen_lengths"):
        preference_loss("ipo", c, r, rc, rr, beta=0.1)
    with pytest.raises(ConfigError, match="label_smoothing"):
        preference_loss("robust", c, r, rc, rr, label_smoothing=0.5)


def test_cdpo_and_robust_definitions():
    c, r, rc, rr = _pairs(5)
    z = 0.1 * ((c - rc) - (r - rr))
    eps = 0.2
    cdpo = preference_loss("cdpo", c, r, rc, rr, beta=0.1, label_smoothing=eps)[0]
    robust = preference_loss("robust", c, r, rc, rr, beta=0.1, label_smoothing=eps)[0]
    ls = jax.nn.log_sigmoid
    np.testing.assert_allclose(np.asarray(cdpo), np.asarray(-(1 - eps) * ls(z) - eps * ls(-z)), rtol=1e-6)
    np.testing.assert_allclose(
        np.asarray(robust), np.asarray((-(1 - eps) * ls(z) + eps * ls(-z)) / (1 - 2 * eps)), rtol=1e-5
    )


def test_declared_needs_match_the_functions():
    """Each `LossSpec` declares exactly the keywords its function takes; reference-free losses
    default their reference arguments to None (the trainer passes None for them)."""
    for name, spec in PREFERENCE_LOSSES.items():
        params = inspect.signature(spec.fn).parameters.values()
        kw = {p.name for p in params if p.kind is p.KEYWORD_ONLY}
        assert kw == set(spec.keywords), name
        ref_defaults = [p.default for p in params if p.kind is p.POSITIONAL_OR_KEYWORD][2:4]
        assert (ref_defaults == [None, None]) == (not spec.needs_reference), name
    assert {n for n, s in PREFERENCE_LOSSES.items() if not s.needs_reference} == {"simpo", "orpo"}
    assert {n for n, s in PREFERENCE_LOSSES.items() if s.needs_lengths} == {
        "ipo", "sigmoid_norm", "simpo", "orpo"}


def test_register_from_outside_and_duplicates():
    @register("test_scaled_sigmoid", hparams=("beta", "scale"))
    def scaled(c, r, rc, rr, *, beta=0.1, scale=1.0):
        losses, cr, rr_ = preference_loss("sigmoid", c, r, rc, rr, beta=beta)
        return scale * losses, cr, rr_

    try:
        c, r, rc, rr = _pairs(6)
        spec = PREFERENCE_LOSSES["test_scaled_sigmoid"]
        assert spec.fn is scaled and spec.needs_reference and not spec.needs_lengths
        out = preference_loss("test_scaled_sigmoid", c, r, rc, rr, beta=0.1, scale=2.0)[0]
        base = preference_loss("sigmoid", c, r, rc, rr, beta=0.1)[0]
        np.testing.assert_allclose(np.asarray(out), 2 * np.asarray(base), rtol=1e-6)
        with pytest.raises(RegistryError, match="registered twice"):
            register("test_scaled_sigmoid")(scaled)
        with pytest.raises(RegistryError, match="'sigmoid' is registered twice"):
            register("sigmoid")(scaled)
    finally:
        PREFERENCE_LOSSES.remove("test_scaled_sigmoid")
    assert "test_scaled_sigmoid" not in PREFERENCE_LOSSES
