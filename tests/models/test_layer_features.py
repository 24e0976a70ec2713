"""Layer features no transformers family of ours switches on, checked against numpy by hand:
attention-logit soft-capping (Gemma 2's; transformers' Gemma 3 reads the setting and ignores it,
so `ModelConfig.from_hf` leaves it off), in the teacher-forced and the decode attention alike."""

import jax.numpy as jnp
import numpy as np

from jaxevo.models import decode
from jaxevo.models.layers import attend_masked
from tests.conftest import tiny_cfg


def test_attention_softcap_matches_numpy():
    cfg = tiny_cfg("qwen3").replace(attn_logit_softcap=0.3)  # small cap: it bites
    rng = np.random.RandomState(0)
    b, t, h, k, d = 1, 5, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    q, key, v = (rng.normal(size=s).astype(np.float32) for s in ((b, t, h, d), (b, t, k, d), (b, t, k, d)))
    mask = np.tril(np.ones((t, t), bool))[None]
    out = np.asarray(attend_masked(cfg, jnp.asarray(q), jnp.asarray(key), jnp.asarray(v), jnp.asarray(mask)))

    g = h // k
    ref = np.zeros_like(q)
    for head in range(h):
        s = q[0, :, head] @ key[0, :, head // g].T * d ** -0.5
        s = 0.3 * np.tanh(s / 0.3)
        s = np.where(mask[0], s, -np.inf)
        p = np.exp(s - s.max(-1, keepdims=True))
        ref[0, :, head] = (p / p.sum(-1, keepdims=True)) @ v[0, :, head // g]
    np.testing.assert_allclose(out, ref, atol=1e-5)
    plain = np.asarray(attend_masked(cfg.replace(attn_logit_softcap=None), jnp.asarray(q), jnp.asarray(key),
                                     jnp.asarray(v), jnp.asarray(mask)))
    assert np.abs(plain - ref).max() > 1e-2  # the cap changed the result

    # the decode attention (cache layout [N, K, D, S] / [N, K, S, D]) computes the same
    ck, cv = jnp.asarray(key.transpose(0, 2, 3, 1)), jnp.asarray(v.transpose(0, 2, 1, 3))
    cached = decode.attend_cache(cfg, jnp.asarray(q), ck, cv, jnp.asarray(mask))
    np.testing.assert_allclose(np.asarray(cached), ref, atol=1e-5)
    for scores in decode.SCORES:  # one query per row (a decode step), each form of the scores
        one = decode.attend_cache(cfg, jnp.asarray(q[:, -1:]), ck, cv, jnp.asarray(mask[:, -1:]), scores)
        np.testing.assert_allclose(np.asarray(one), ref[:, -1:], atol=1e-5)
