"""Prompt-lookup speculative decoding: drafts, greedy equivalence, exact sampling distribution."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from jaxevo.errors import ConfigError
from jaxevo.sampling import Sampler, SamplingParams
from jaxevo.sampling.lookup import NO_TOKEN, lookup_draft
from jaxevo.sampling.sampler import teacher_forced_logprobs
from tests.sampling.helpers import tiny


def test_lookup_draft_finds_latest_longest_match():
    X = NO_TOKEN
    hist = jnp.asarray([
        [X, X, 1, 2, 3, 4, 5, 1, 2, 3, 9, 9, 0],  # history of 10 ends with (1,2,3), seen at 2..4
        [1, 2, 3, 4, 5, 6, 7, 8, 2, 3, 0, 0, 0],  # (2,3) seen at 1..2 -> draft 4 5 6
        [5, 6, 7, 8, 9, 5, 6, 7, 1, 6, 7, 0, 0],  # (6,7) latest at 5..7 -> draft 1 6 7 (longest 2)
        [1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # no earlier occurrence of 4
    ], jnp.int32)
    length = jnp.asarray([10, 10, 11, 4])
    draft, nd = lookup_draft(hist, length, k=3, max_ngram=3)
    np.testing.assert_array_equal(nd, [3, 3, 3, 0])
    np.testing.assert_array_equal(draft[0], [4, 5, 1])  # (1,2,3) at 2..4, then 4 5 1
    np.testing.assert_array_equal(draft[1], [4, 5, 6])
    np.testing.assert_array_equal(draft[2], [1, 6, 7])
    # the draft stops at the end of the history
    d, n = lookup_draft(jnp.asarray([[7, 8, 7, 0]], jnp.int32), jnp.asarray([3]), k=4)
    np.testing.assert_array_equal(n, [2])
    np.testing.assert_array_equal(d[0, :2], [8, 7])


def _repetitive_prompts():
    rng = np.random.RandomState(0)
    base = list(rng.randint(0, 256, 10))
    return [base * 3, list(range(10, 40)), [5, 6, 7] * 6, [1, 2], base + [3, 4] + base[:5]]


@pytest.mark.parametrize("family", ["llama3", "qwen2"])
def test_greedy_speculation_equals_plain_greedy(family):
    cfg, params = tiny(family)
    s = Sampler(cfg, params)
    prompts = _repetitive_prompts()
    plain = s.generate_ids(prompts, max_new_tokens=24, temperature=0, stop_token_ids=(258,))
    fast = s.generate_ids(prompts, max_new_tokens=24, temperature=0, stop_token_ids=(258,), speculate=4)
    assert s.last_stats.draft_accepted > 0 and s.last_stats.decode_steps < 23
    for p, a, b in zip(prompts, plain, fast):
        assert a[0].token_ids == b[0].token_ids and a[0].finish_reason == b[0].finish_reason
        np.testing.assert_allclose(b[0].token_logprobs, teacher_forced_logprobs(params, cfg, p, b[0].token_ids),
                                   atol=1e-4)
    # a stop id inside an accepted draft ends the completion there
    r = max(range(len(prompts)), key=lambda i: plain[i][0].length)
    ids = list(plain[r][0].token_ids)
    assert len(ids) >= 8
    stop = ids[6]
    a = s.generate_ids(prompts[r:r + 1], max_new_tokens=24, temperature=0, stop_token_ids=(stop,))[0][0]
    b = s.generate_ids(prompts[r:r + 1], max_new_tokens=24, temperature=0, stop_token_ids=(stop,),
                       speculate=6)[0][0]
    assert a.token_ids == b.token_ids == tuple(ids[:ids.index(stop) + 1]) and b.finish_reason == "eos"


def test_speculative_sampling_is_exact():
    """The 2nd token is verified against a lookup draft (every token is in the prompt); its
    marginal over 4096 samples must match sum_t0 p(t0) p(. | t0) (chi-square)."""
    from scipy import stats

    cfg, params = tiny("llama3", vocab=16)
    prompt = list(np.random.RandomState(1).permutation(16)) + [3, 1]
    s = Sampler(cfg, params, max_batch=1024)
    outs = s.generate_ids([prompt], max_new_tokens=2, temperature=1.3, min_p=0.02, n=4096, seed=0,
                          stop_token_ids=(), speculate=2, lookup_ngram=1)[0]
    assert s.last_stats.draft_accepted > 0
    from jaxevo.sampling.processors import Knobs, Mode, process
    import jax

    def probs(lp):  # the processed distribution from log-probs
        return np.asarray(jax.nn.softmax(process(jnp.asarray(lp)[None], Mode(min_p=True), Knobs.make(1.3, min_p=0.02))[0]),
                          np.float64)

    lp0 = np.array([teacher_forced_logprobs(params, cfg, prompt, [t])[0] for t in range(16)])
    p0 = probs(lp0)
    p1 = np.zeros(16)
    for t0 in range(16):
        if p0[t0] > 0:
            lp1 = np.array([teacher_forced_logprobs(params, cfg, prompt, [t0, t])[1] for t in range(16)])
            p1 += p0[t0] * probs(lp1)
    counts = np.bincount([c.token_ids[1] for c in outs], minlength=16)
    exp = p1 / p1.sum() * len(outs)
    keep = exp >= 5
    assert counts[exp == 0].sum() == 0
    obs, e = counts[keep], exp[keep]
    if not keep.all() and exp[~keep].sum() > 0:
        obs, e = np.append(obs, counts[~keep].sum()), np.append(e, exp[~keep].sum())
    assert stats.chisquare(obs, e * obs.sum() / e.sum()).pvalue > 1e-3


def test_speculation_rejects_unsupported_processors():
    with pytest.raises(ConfigError, match="speculate"):
        SamplingParams(speculate=4, top_p=0.9)
