"""Recipe losses: EVOLVE, SELF meta-skill, per-sequence NLL."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxevo.errors import ConfigError
from jaxevo.losses import evolve_loss, preference_loss, self_meta_loss, sequence_nll

B = 8


def _views(seed=0):
    k = jax.random.split(jax.random.PRNGKey(seed), 8)
    u = lambda i: -jax.random.uniform(k[i], (B,), minval=5.0, maxval=40.0)  # noqa: E731
    return [u(i) for i in range(8)]


def test_evolve_is_twice_dpo_when_refine_equals_direct():
    c, r, rc, rr, *_ = _views(1)
    loss, aux = evolve_loss(c, r, c, r, rc, rr, rc, rr, beta=0.1)
    dpo = jnp.mean(preference_loss("sigmoid", c, r, rc, rr, beta=0.1)[0])
    np.testing.assert_allclose(float(loss), 2 * float(dpo), rtol=1e-6)
    np.testing.assert_allclose(float(aux["direct"]), float(aux["refine"]))
    # and gradients are twice DPO's
    g = jax.grad(lambda x: evolve_loss(x, r, x, r, rc, rr, rc, rr, beta=0.1)[0])(c)
    g_dpo = jax.grad(lambda x: jnp.mean(preference_loss("sigmoid", x, r, rc, rr, beta=0.1)[0]))(c)
    np.testing.assert_allclose(np.asarray(g), 2 * np.asarray(g_dpo), rtol=1e-6)


def test_evolve_terms_and_variants():
    dc, dr, fc, fr, rdc, rdr, rfc, rfr = _views(2)
    beta = 0.2
    loss, aux = evolve_loss(dc, dr, fc, fr, rdc, rdr, rfc, rfr, beta=beta, refine_weight=0.5)
    d = jnp.mean(preference_loss("sigmoid", dc, dr, rdc, rdr, beta=beta)[0])
    f = jnp.mean(preference_loss("sigmoid", fc, fr, rfc, rfr, beta=beta)[0])
    np.testing.assert_allclose(float(loss), float(d + 0.5 * f), rtol=1e-6)

    # (a) IPO-style regression on β·h = p̂ − ½
    p_hat = jnp.linspace(0.6, 1.0, B)
    ipo, _ = evolve_loss(dc, dr, fc, fr, rdc, rdr, rfc, rfr, beta=beta, variant="ipo", target_prob=p_hat)
    h_d = (dc - rdc) - (dr - rdr)
    h_f = (fc - rfc) - (fr - rfr)
    want = jnp.mean((beta * h_d - (p_hat - 0.5)) ** 2) + jnp.mean((beta * h_f - (p_hat - 0.5)) ** 2)
    np.testing.assert_allclose(float(ipo), float(want), rtol=1e-6)

    # (c) SimPO-style, reference-free: equals TRL's simpo on each view (γ/β inside == γ outside)
    counts = dict(direct_chosen_count=jnp.full(B, 10.0), direct_rejected_count=jnp.full(B, 12.0),
                  refine_chosen_count=jnp.full(B, 11.0), refine_rejected_count=jnp.full(B, 9.0))
    simpo, _ = evolve_loss(dc, dr, fc, fr, beta=2.0, variant="simpo", simpo_gamma=0.5, **counts)
    t1 = preference_loss("simpo", dc, dr, None, None, beta=2.0, simpo_gamma=0.5,
                         chosen_lengths=counts["direct_chosen_count"], rejected_lengths=counts["direct_rejected_count"])[0]
    t2 = preference_loss("simpo", fc, fr, None, None, beta=2.0, simpo_gamma=0.5,
                         chosen_lengths=counts["refine_chosen_count"], rejected_lengths=counts["refine_rejected_count"])[0]
    np.testing.assert_allclose(float(simpo), float(jnp.mean(t1) + jnp.mean(t2)), rtol=1e-6)

    # (d) + λ·NLL(y_w | x), token mean
    with_nll, aux = evolve_loss(dc, dr, fc, fr, rdc, rdr, rfc, rfr, beta=beta, nll_weight=0.3,
                                direct_chosen_count=counts["direct_chosen_count"])
    base, _ = evolve_loss(dc, dr, fc, fr, rdc, rdr, rfc, rfr, beta=beta)
    np.testing.assert_allclose(float(with_nll), float(base - 0.3 * jnp.sum(dc) / (10.0 * B)), rtol=1e-6)

    with pytest.raises(ConfigError, match="variant"):
        evolve_loss(dc, dr, fc, fr, rdc, rdr, rfc, rfr, variant="kto")
    with pytest.raises(ConfigError, match="reference"):
        evolve_loss(dc, dr, fc, fr)
    jitted = jax.jit(lambda *a: evolve_loss(*a, beta=beta)[0])(dc, dr, fc, fr, rdc, rdr, rfc, rfr)
    np.testing.assert_allclose(float(jitted), float(evolve_loss(dc, dr, fc, fr, rdc, rdr, rfc, rfr, beta=beta)[0]), rtol=1e-6)


def test_self_meta_loss():
    fb, rf, dr = jnp.array([2.0, 4.0, 6.0]), jnp.array([1.0, 1.0, 1.0]), jnp.array([3.0, 3.0, 0.0])
    loss, aux = self_meta_loss(fb, rf, dr, beta=0.5)
    np.testing.assert_allclose(float(loss), float(jnp.mean(fb + rf + 0.5 * dr)), rtol=1e-6)
    # plain QA examples contribute only their direct term
    loss_qa, aux_qa = self_meta_loss(fb, rf, dr, beta=0.5, has_meta=jnp.array([1, 1, 0]))
    np.testing.assert_allclose(float(loss_qa), (2 + 1 + 1.5 + 4 + 1 + 1.5 + 0.0) / 3, rtol=1e-6)
    np.testing.assert_allclose(float(aux_qa["feedback"]), 3.0)
    # from summed log-probs of the three views
    nll = sequence_nll(jnp.array([-10.0, -6.0]), jnp.array([5.0, 3.0]))
    np.testing.assert_allclose(np.asarray(nll), [2.0, 2.0])
    np.testing.assert_allclose(np.asarray(sequence_nll(jnp.array([-10.0]), per_token=False)), [10.0])
    g = jax.grad(lambda x: self_meta_loss(x, rf, dr)[0])(fb)
    np.testing.assert_allclose(np.asarray(g), np.full(3, 1 / 3), rtol=1e-6)
