"""On-policy gradient of the GRPO family: with one optimiser step per batch (old = current
log-probs, μ = 1) every clipped-ratio loss is the policy-gradient estimate

    ∇θ L = − Σ_{b,t} w_{b,t} · A_b · ∇θ log π_θ(y_{b,t})

with the weights w the loss type's averaging: grpo 1/(B·|y_b|), bnpo and dapo 1/Σ|y|, dr_grpo
1/(B·L_max). The reference is built from the per-token Jacobian of a tiny transformer's log-probs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxevo.losses import policy_loss
from jaxevo.models.transformer import Transformer, causal_mask, positions_from_valid
from tests.conftest import random_params, tiny_cfg

B, PROMPT, T, L_MAX = 4, 3, 5, 7


@pytest.fixture(scope="module")
def setup():
    cfg = tiny_cfg("llama3")
    params = random_params(cfg, seed=1)
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(0, cfg.vocab_size, size=(B, PROMPT + T)), jnp.int32)
    lengths = np.array([5, 2, 0, 3])  # ragged, one fully padded row
    mask = jnp.asarray(np.arange(T)[None, :] < lengths[:, None], jnp.float32)
    adv = jnp.asarray([1.3, -0.7, 0.4, -1.1], jnp.float32)
    valid = jnp.ones(tokens.shape, jnp.int32)
    model = Transformer(cfg)

    def logps(p):  # [B, T] log-probs of the completion tokens
        logits, _ = model.apply({"params": p}, tokens, positions_from_valid(valid), causal_mask(valid))
        lp = jax.nn.log_softmax(logits[:, PROMPT - 1 : -1].astype(jnp.float32), axis=-1)
        return jnp.take_along_axis(lp, tokens[:, PROMPT:, None], axis=-1)[..., 0]

    jac = jax.jit(jax.jacrev(logps))(params)  # each leaf [B, T, *param_shape]; jitted: one program
    return params, logps, jac, mask, adv, lengths


def _weights(loss_type, mask, lengths):
    if loss_type == "grpo":
        return mask / (B * np.maximum(lengths, 1)[:, None])
    if loss_type == "dr_grpo":
        return mask / (B * L_MAX)
    return mask / mask.sum()  # bnpo, dapo (and cispo below its cap)


@pytest.mark.parametrize("loss_type,level", [("grpo", "token"), ("grpo", "sequence"), ("bnpo", "token"),
                                             ("dr_grpo", "token"), ("dapo", "token"), ("cispo", "token")])
def test_on_policy_gradient_is_policy_gradient(setup, loss_type, level):
    params, logps, jac, mask, adv, lengths = setup
    eps_high = 5.0 if loss_type == "cispo" else 0.2

    def loss(p):
        return policy_loss(loss_type, logps(p), None, None, adv, mask, max_completion_length=L_MAX,
                           importance_sampling_level=level, epsilon_high=eps_high)[0]

    grad = jax.jit(jax.grad(loss))(params)
    w = -_weights(loss_type, np.asarray(mask), lengths) * np.asarray(adv)[:, None]  # [B, T]
    expected = jax.tree.map(lambda j: jnp.tensordot(jnp.asarray(w, jnp.float32), j, axes=2), jac)
    flat_g, flat_e = jax.tree.leaves(grad), jax.tree.leaves(expected)
    scale = max(float(jnp.max(jnp.abs(e))) for e in flat_e)
    assert scale > 1e-4  # the reference is not trivially zero
    for g, e in zip(flat_g, flat_e):
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=1e-4, atol=1e-6 * scale)


def test_on_policy_loss_value_is_minus_mean_advantage(setup):
    """At ratio 1 and β = 0 the grpo loss is −mean_b(A_b · [|y_b| > 0]) (padded rows add 0)."""
    params, logps, _, mask, adv, lengths = setup
    loss, metrics = policy_loss("grpo", logps(params), None, None, adv, mask)
    np.testing.assert_allclose(float(loss), -float(np.sum(np.asarray(adv) * (lengths > 0))) / B, rtol=1e-6)
    assert float(metrics["clip_ratio/region_mean"]) == 0.0
