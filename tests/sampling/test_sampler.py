"""The sampler on tiny random models: parity with transformers, log-probs, sampling statistics,
stops, bucketing, errors."""

from __future__ import annotations

import re

import jax.numpy as jnp
import numpy as np
import pytest

from jaxevo.errors import ConfigError, JaxevoError
from jaxevo.models import decode
from jaxevo.sampling import Sampler, SamplingParams, loop, teacher_forced_logprobs
from jaxevo.sampling.params import packed_rows
from jaxevo.sampling.prefill_pack import prefill_pack
from tests.conftest import TINY_HF
from tests.sampling.helpers import IM_END, byte_tokenizer, tiny, tiny_model_dir

# Prompts of varied lengths (ids < 256), one padded batch.
PROMPTS = [list(np.random.RandomState(i).randint(0, 256, size=n)) for i, n in
           enumerate([5, 1, 17, 9, 30, 2, 12, 23])]


@pytest.mark.torch
@pytest.mark.parametrize("family", ["llama3", "mistral", "qwen2", "mistral-sw", "llama32", "qwen3",
                                    "gemma3", "phi3"])
def test_greedy_matches_transformers(tmp_path, family):
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    d = tiny_model_dir(tmp_path, family)
    cfg, params = tiny(family)
    new = 16
    outs = Sampler(cfg, params).generate_ids(PROMPTS, max_new_tokens=new, temperature=0, stop_token_ids=())

    hf = AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float32).eval()
    width = max(map(len, PROMPTS))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in PROMPTS])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in PROMPTS])
    with torch.no_grad():
        ref = hf.generate(ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                          do_sample=False, pad_token_id=0, eos_token_id=None)[:, width:].numpy()
    got = np.array([o[0].token_ids for o in outs])
    np.testing.assert_array_equal(got, ref)
    assert all(o[0].finish_reason == "length" and o[0].length == new for o in outs)


# Not phi3: longrope picks its factors per call from the largest position, so a short prompt's
# prefill (short factors) and one teacher-forced pass over prompt + completion (long factors) differ
# by design, in transformers too; its greedy tokens match transformers' generate above.
@pytest.mark.parametrize("family", ["llama3", "qwen2", "mistral-sw", "gemma3"])
def test_logprobs_equal_teacher_forced(family):
    cfg, params = tiny(family)
    outs = Sampler(cfg, params, max_batch=8, prefill_chunk=16).generate_ids(  # 2 prefill chunks
        PROMPTS[:5], max_new_tokens=12, temperature=1.0, top_p=0.9, repetition_penalty=1.3, n=2,
        seed=3, stop_token_ids=(7, 9))
    for p, per_prompt in zip(PROMPTS, outs):
        for c in per_prompt:
            ref = teacher_forced_logprobs(params, cfg, p, c.token_ids)
            np.testing.assert_allclose(c.token_logprobs, ref, atol=1e-4, rtol=0)
            assert abs(c.logprob - float(ref.sum())) < 1e-3
            assert c.length == len(c.token_logprobs) <= 12


def _same_completions(cfg, params, got, ref) -> list[int]:
    """Assert two samplings of PROMPTS wrote the same tokens and finish reasons with the same
    log-probs (1e-6), and that those are the teacher-forced ones (1e-4); returns the lengths."""
    lengths = []
    for p, outs, refs in zip(PROMPTS, got, ref):
        for a, b in zip(outs, refs):
            assert a.token_ids == b.token_ids and a.finish_reason == b.finish_reason
            np.testing.assert_allclose(a.token_logprobs, b.token_logprobs, atol=1e-6, rtol=0)
            np.testing.assert_allclose(a.token_logprobs, teacher_forced_logprobs(params, cfg, p, a.token_ids),
                                       atol=1e-4, rtol=0)
            lengths.append(a.length)
    return lengths


@pytest.mark.parametrize("family", ["llama3", "mistral-sw"])
def test_growing_cache_changes_nothing(monkeypatch, family):
    """A batch whose cache buffer grows in segments (70 new tokens: 32 + 32 + 32 slots) writes the
    same tokens with the same log-probs as one whose buffer holds every slot from the start, and
    those log-probs are the teacher-forced ones; the sliding window (mistral-sw, 16 slots) crosses
    the segment ends."""
    import jaxevo.sampling.api as api

    cfg, params = tiny(family)
    sp = SamplingParams(max_new_tokens=70, temperature=1.0, n=2, seed=1, stop_token_ids=(5,))
    grown = []
    real_grow = loop.grow
    monkeypatch.setattr(loop, "grow", lambda cache, **kw: grown.append(kw["slots"]) or real_grow(cache, **kw))
    # no progress bar: `run` returns only when the rows are done or the buffer is full
    segmented = Sampler(cfg, params, max_batch=8, lanes=1).generate_ids(PROMPTS, sp, progress=False)
    # two batches (longest prompts first: buckets of 32 and 16 slots), each through all 3 sizes
    assert grown == [32 + 64, 32 + 96, 16 + 64, 16 + 96]
    monkeypatch.setattr(api, "cache_segments", lambda t, m: [t + m])
    whole = Sampler(cfg, params, max_batch=8, lanes=1).generate_ids(PROMPTS, sp, progress=False)
    assert len(grown) == 4
    lengths = _same_completions(cfg, params, segmented, whole)
    assert max(lengths) == 70 and min(lengths) < 32  # rows ran into the last segment; some stopped early


def test_narrowed_batch_changes_nothing(monkeypatch):
    """A batch cut to its running rows (16 -> 4 once 12 of 16 have stopped, with 40 of 80 new
    tokens left) writes the same tokens with the same log-probs as the whole batch decoding on,
    and those log-probs are the teacher-forced ones. The stop ids end 12 rows by step 32 and leave
    4 running to 80 tokens (found by sampling this model without stops)."""
    cfg, params = tiny("llama3")
    sp = SamplingParams(max_new_tokens=80, temperature=1.0, n=2, seed=1, stop_token_ids=(0, 42, 200))
    taken = []
    real_take = loop.take_rows
    monkeypatch.setattr(loop, "take_rows", lambda cache, state, rows, **kw: taken.append(
        state.done.shape[0]) or real_take(cache, state, rows, **kw))
    # a look every 8 steps (the progress bar's): the host sees 4 rows running after step 40
    narrowed = Sampler(cfg, params, max_batch=16, check_every=8)
    got = narrowed.generate_ids(PROMPTS, sp, progress=True)
    assert taken == [16] and narrowed.last_stats.narrowed == 1
    whole = Sampler(cfg, params, max_batch=16, check_every=8, narrow=False)
    ref = whole.generate_ids(PROMPTS, sp, progress=True)
    assert len(taken) == 1 and whole.last_stats.narrowed == 0
    lengths = _same_completions(cfg, params, got, ref)
    assert sum(n > 40 for n in lengths) == 4 and max(lengths) == 80 and min(lengths) < 16


def test_top_k_one_equals_greedy():
    cfg, params = tiny("llama3")
    s = Sampler(cfg, params)
    greedy = s.generate_ids(PROMPTS, max_new_tokens=10, temperature=0, stop_token_ids=())
    topk1 = s.generate_ids(PROMPTS, max_new_tokens=10, temperature=0.7, top_k=1, seed=5, stop_token_ids=())
    assert [o[0].token_ids for o in greedy] == [o[0].token_ids for o in topk1]


def test_token_frequencies_match_softmax():
    """First-token frequencies over 4096 samples of one prompt vs the model's softmax (chi-square)."""
    from scipy import stats

    cfg, params = tiny("llama3", vocab=32)
    prompt = [3, 1, 4, 1, 5]
    s = Sampler(cfg, params, max_batch=1024)
    outs = s.generate_ids([prompt], max_new_tokens=1, temperature=1.0, n=4096, seed=0, stop_token_ids=())[0]
    counts = np.bincount([c.token_ids[0] for c in outs], minlength=cfg.vocab_size)
    lp = np.array([teacher_forced_logprobs(params, cfg, prompt, [t])[0] for t in range(cfg.vocab_size)])
    prob = np.exp(lp.astype(np.float64))
    expected = prob / prob.sum() * len(outs)
    keep = expected >= 5  # chi-square validity; pool the rare tail
    obs, exp = counts[keep], expected[keep]
    if not keep.all():
        obs, exp = np.append(obs, counts[~keep].sum()), np.append(exp, expected[~keep].sum())
    exp *= obs.sum() / exp.sum()
    assert stats.chisquare(obs, exp).pvalue > 1e-3
    # each sample's log-prob is the model's log-prob of its token
    for c in outs[:20]:
        assert abs(c.logprob - lp[c.token_ids[0]]) < 1e-5
    # same seed => same samples; another seed => different ones
    again = s.generate_ids([prompt], max_new_tokens=1, n=64, seed=0, stop_token_ids=())[0]
    assert [c.token_ids for c in again] == [c.token_ids for c in outs[:64]]
    other = s.generate_ids([prompt], max_new_tokens=1, n=64, seed=1, stop_token_ids=())[0]
    assert [c.token_ids for c in other] != [c.token_ids for c in outs[:64]]


def test_samples_do_not_depend_on_batching():
    cfg, params = tiny("llama3")
    sp = SamplingParams(max_new_tokens=8, temperature=0.9, n=3, seed=11, stop_token_ids=())
    a = Sampler(cfg, params, max_batch=32).generate_ids(PROMPTS, sp)
    b = Sampler(cfg, params, max_batch=4).generate_ids(PROMPTS, sp)
    assert [[c.token_ids for c in o] for o in a] == [[c.token_ids for c in o] for o in b]
    assert len({c.token_ids for c in a[0]}) > 1  # the n samples differ


def test_slices_with_first_index_equal_the_whole_list():
    # What a killed stage relies on to resume mid-sampling (evolve/journal.py).
    cfg, params = tiny("llama3")
    sp = SamplingParams(max_new_tokens=8, temperature=0.9, n=2, seed=5, stop_token_ids=())
    s = Sampler(cfg, params, max_batch=8)
    whole = s.generate_ids(PROMPTS, sp)
    k = len(PROMPTS) // 2
    whole_stats = s.last_stats
    parts = s.generate_ids(PROMPTS[:k], sp)
    stats = s.last_stats
    parts += s.generate_ids(PROMPTS[k:], sp, first_index=k)
    stats.add(s.last_stats)  # how the round driver's journal totals its chunks
    assert [[c.token_ids for c in o] for o in parts] == [[c.token_ids for c in o] for o in whole]
    assert (stats.completions, stats.new_tokens) == (whole_stats.completions, whole_stats.new_tokens)
    shifted = s.generate_ids(PROMPTS[k:], sp)  # without first_index: other random streams
    assert [[c.token_ids for c in o] for o in shifted] != [[c.token_ids for c in o] for o in whole[k:]]


def test_stop_ids_and_stop_strings():
    cfg, params = tiny("llama3")
    tok = byte_tokenizer()
    s = Sampler(cfg, params, tok)
    prompt = [list(range(40, 60))]
    full = s.generate_ids(prompt, max_new_tokens=24, temperature=0, stop_token_ids=())[0][0]
    ids = list(full.token_ids)
    # a stop id: generation ends at its first occurrence, which is kept in token_ids, not in text
    k = 5
    first = ids.index(ids[k])
    out = s.generate_ids(prompt, max_new_tokens=24, temperature=0, stop_token_ids=(ids[k], IM_END))[0][0]
    assert out.finish_reason == "eos" and list(out.token_ids) == ids[:first + 1]
    assert out.text == tok.decode(ids[:first], skip_special_tokens=True)
    np.testing.assert_allclose(out.token_logprobs, full.token_logprobs[:first + 1], atol=1e-6)
    # a stop string: text cut before it; tokens up to the one that completes it
    text = full.text
    j = next(j for j in range(3, len(text) - 1) if text[j:j + 2].isprintable() and text[j:j + 2].strip()
             and text.find(text[j:j + 2]) == j)
    stop = text[j:j + 2]
    out = s.generate_ids(prompt, max_new_tokens=24, temperature=0, stop_token_ids=(), stop=(stop, "never"))[0][0]
    assert out.finish_reason == "stop" and out.text == text[:j]
    assert stop in tok.decode(out.token_ids) and stop not in tok.decode(out.token_ids[:-1])
    assert list(out.token_ids) == ids[:out.length]
    assert out.logprob == pytest.approx(float(full.token_logprobs[:out.length].sum()), abs=1e-4)


def test_buckets_bound_compilations():
    cfg, params = tiny("mistral")
    s = Sampler(cfg, params, max_batch=4, lanes=1)  # one lane: the batches in turn
    prompts = [list(range(1, 2 + i * 3)) for i in range(11)]  # lengths 1..31
    before = loop.run._cache_size()
    s.generate_ids(prompts, max_new_tokens=5, temperature=0.5, stop_token_ids=())
    # 11 prompts -> 3 batches; lengths 31..1 fall in 3 prompt buckets, batch sizes in {4, 4, 4}
    assert s.last_stats.batches == 3
    assert len(s.last_stats.shapes) <= 3
    assert loop.run._cache_size() - before <= 3
    # a second run with the same settings compiles nothing new
    mid = loop.run._cache_size()
    s.generate_ids(prompts[::-1], max_new_tokens=5, temperature=0.5, stop_token_ids=())
    assert loop.run._cache_size() == mid
    # explicit prompt buckets
    s2 = Sampler(cfg, params, max_batch=4, prompt_buckets=(40, 20))
    s2.generate_ids(prompts[-2:], max_new_tokens=5, temperature=0.5, stop_token_ids=())
    assert {sh[2] for sh in s2.last_stats.shapes} == {40}


def test_too_long_prompt_errors_or_truncates():
    cfg, params = tiny("llama3")  # max_position_embeddings 256
    s = Sampler(cfg, params, max_length=64)
    prompts = [[1, 2, 3], list(range(1, 61))]
    with pytest.raises(JaxevoError, match=r"prompt 1 has 60 tokens but only 48 fit.*max_new_tokens 16"):
        s.generate_ids(prompts, max_new_tokens=16)
    with pytest.raises(JaxevoError, match="prompt 0 is empty"):
        s.generate_ids([[]], max_new_tokens=4)
    with pytest.warns(UserWarning, match="truncated 1 prompt"):
        outs = s.generate_ids(prompts, max_new_tokens=16, temperature=0, truncate=True, stop_token_ids=())
    c = outs[1][0]
    assert c.truncated_tokens == 12 and c.prompt_tokens == 48 and outs[0][0].truncated_tokens == 0
    ref = s.generate_ids([prompts[1][12:]], max_new_tokens=16, temperature=0, stop_token_ids=())[0][0]
    assert c.token_ids == ref.token_ids


def test_text_prompts_and_chat_messages():
    cfg, params = tiny("qwen2")
    tok = byte_tokenizer()
    s = Sampler(cfg, params, tok)
    msgs = [{"role": "user", "content": "hi there"}]
    a = s.generate(["hi there", msgs], max_new_tokens=6, temperature=0)
    assert a[0][0].token_ids == a[1][0].token_ids  # same chat prompt either way
    assert a[0][0].prompt_tokens == len(tok(s.prompt_text("hi there"), add_special_tokens=False)["input_ids"])
    raw = s.generate(["hi there"], max_new_tokens=6, temperature=0, chat=False)
    assert raw[0][0].prompt_tokens == len("hi there")
    assert isinstance(a[0][0].text, str)
    with pytest.raises(JaxevoError):
        s.generate([msgs], chat=False)


def test_stop_after_pattern_ends_rows_in_the_loop():
    """An end-of-answer pattern ends a row inside the decode loop (fewer decode steps) and keeps
    the text up to the match's end; where the host looked (check_every) changes nothing."""
    cfg, params = tiny("llama3")
    tok = byte_tokenizer()
    prompt = [list(range(40, 60))]
    full = Sampler(cfg, params, tok).generate_ids(prompt, max_new_tokens=40, temperature=0, stop_token_ids=())[0][0]
    text = full.text
    j = next(j for j in range(4, 12) if text[j:j + 2].strip() and text.find(text[j:j + 2]) == j)
    pattern = re.escape(text[j:j + 2])
    outs = []
    for every in (1, 4, 64):
        s = Sampler(cfg, params, tok, check_every=every)
        out = s.generate_ids(prompt, max_new_tokens=40, temperature=0, stop_token_ids=(), stop_after=(pattern,))[0][0]
        assert out.finish_reason == "stop" and out.text == text[:j + 2]
        assert list(out.token_ids) == list(full.token_ids[:out.length])
        dec = lambda ids: tok.decode(ids, skip_special_tokens=True)  # noqa: E731
        assert re.search(pattern, dec(out.token_ids)) and not re.search(pattern, dec(out.token_ids[:-1]))
        outs.append((out, s.last_stats.decode_steps))
    # the row ended within `check_every` steps of the match, not at the 40-token limit
    assert outs[0][1] <= outs[0][0].length and outs[1][1] <= outs[1][0].length + 4
    # sampled rows of several prompts: the same completions whatever the look interval
    sp = SamplingParams(max_new_tokens=24, temperature=0.9, n=3, seed=2, stop_token_ids=(), stop_after=(r"[aeiou]\W",))
    a = Sampler(cfg, params, tok, check_every=1, max_batch=4).generate(["hi", "a longer prompt here"], sp)
    b = Sampler(cfg, params, tok, check_every=16, max_batch=4, continuous=True).generate(["hi", "a longer prompt here"], sp)
    assert [[(c.token_ids, c.text, c.finish_reason) for c in o] for o in a] == \
        [[(c.token_ids, c.text, c.finish_reason) for c in o] for o in b]
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        SamplingParams(stop_after=("(unclosed",))


def test_progress_bar_moves_while_rows_decode(monkeypatch):
    """The bar advances every `check_every` steps (by the share of the token budget used), not
    only when a whole batch finishes."""
    from jaxevo.sampling import api, progress

    seen = []

    class Bar(progress._NoBar):
        n = 0.0

        def set_postfix(self, **_):
            seen.append(self.n)

    monkeypatch.setattr(api, "progress_bar", lambda total, show: Bar())
    cfg, params = tiny("llama3")
    Sampler(cfg, params, byte_tokenizer(), check_every=4).generate_ids(
        PROMPTS[:4], max_new_tokens=32, temperature=0, stop_token_ids=(), progress=True)
    assert seen[-1] == 4 and len(seen) >= 6
    assert any(0 < x < 4 for x in seen) and seen == sorted(seen)


def test_journaled_sampling_moves_one_bar_during_each_slice(monkeypatch, tmp_path):
    """A run's stages sample through `JournaledSampler`, which samples in slices: its one bar
    moves while a slice decodes, not only when a slice ends (it stood at 0/150 for a whole eval
    of the demo before)."""
    from jaxevo.evolve import journal
    from jaxevo.sampling import progress

    seen = []

    class Bar:  # a shown bar (not the silent stand-in), recording its count at each refresh
        n = 0.0

        def set_postfix(self, **_):
            seen.append(self.n)

        def update(self, k):
            self.n += k

        def close(self):
            pass

    monkeypatch.setattr(journal, "progress_bar", lambda total, show: Bar())
    cfg, params = tiny("llama3")
    sampler = Sampler(cfg, params, byte_tokenizer(), check_every=4, max_batch=4)
    js = journal.JournaledSampler(sampler, "tiny", lambda: tmp_path / "samples_00.jsonl", chunk_rows=4)
    prompts = [f"prompt {i}" for i in range(8)]
    out = js.generate(prompts, SamplingParams(max_new_tokens=32, temperature=0, stop_token_ids=()),
                      chat=False, progress=True)
    assert len(out) == 8 and seen[-1] == 8 and seen == sorted(seen)
    assert any(0 < x < 4 for x in seen) and any(4 < x < 8 for x in seen), seen  # inside both slices
    silent = journal.JournaledSampler(sampler, "tiny", lambda: tmp_path / "samples_01.jsonl", chunk_rows=4)
    n_before = len(seen)
    monkeypatch.setattr(journal, "progress_bar", lambda total, show: progress._NoBar() if not show else Bar())
    again = silent.generate(prompts, SamplingParams(max_new_tokens=32, temperature=0, stop_token_ids=()),
                            chat=False, progress=False)
    assert len(seen) == n_before  # no bar: nothing advanced
    assert [[c.token_ids for c in o] for o in again] == [[c.token_ids for c in o] for o in out]


def test_prefill_pack_by_hand():
    """Three left-padded prompts: [5 6 7], [5 6] (all of it the first's prefix) and [5 6 8 9]."""
    tokens = np.array([[0, 5, 6, 7], [0, 0, 5, 6], [5, 6, 8, 9]], np.int32)
    pack, unpack_at = prefill_pack(tokens, tokens > 0)
    # runs: the first prompt's three tokens, then the third's 8 and 9; padded to 6 (a quarter of 12)
    assert pack.tolist() == [1, 2, 3, 10, 11, 12]
    assert unpack_at.tolist() == [0, 0, 1, 2, 0, 0, 0, 1, 0, 1, 3, 4]
    assert prefill_pack(tokens[2:], tokens[2:] > 0) is None  # nothing to leave out: no packing


# Prompts that begin as others do: a prefix of 20 tokens, a whole prompt's first 10, a whole
# prompt and 3 more tokens (a chat template's system prompt is such a shared beginning).
SHARED = PROMPTS + [PROMPTS[4][:20] + [7, 8], PROMPTS[2][:10], PROMPTS[3] + [1, 2, 3]]


@pytest.mark.parametrize("family, dtype", [(f, "float32") for f in sorted(TINY_HF)]
                         + [(f, "bfloat16") for f in ("llama3", "gemma3", "qwen3")])
def test_packed_prefill_equals_the_padded_one(family, dtype):
    """The prefill's per-token work on the real tokens only, each shared beginning once
    (`loop.prefill(pack=prefill_pack(...))`), gives the logits and the real slots' keys and
    values of the padded prefill: to the products' summation order in f32 (5e-6 on O(1) values;
    3e-7 seen compiled as a user's run is, 2.6e-6 with most optimizations off, as the suite
    compiles), to a few bf16 roundings in bf16 (the same bits seen on these models; three
    families in bf16, a plain one, Gemma 3's sliding windows and Qwen 3's q/k norms, to keep the
    suite's time)."""
    cfg, params = tiny(family, dtype=dtype)
    w = decode.prepare_weights(params, cfg)
    p, t = len(SHARED), 32
    tokens, valid = np.zeros((p, t), np.int32), np.zeros((p, t), bool)
    for j, ids in enumerate(SHARED):
        tokens[j, t - len(ids):], valid[j, t - len(ids):] = ids, True
    pack, unpack_at = prefill_pack(tokens, valid)
    # the distinct prompt beginnings: each token once per distinct prefix ending at it
    distinct = len({tuple(ids[:i + 1]) for ids in SHARED for i in range(len(ids))})
    assert distinct < valid.sum() and int(np.sum(pack < p * t)) == distinct
    assert len(pack) == packed_rows(distinct, p * t) < p * t
    args = (w, jnp.asarray(tokens), jnp.asarray(valid), cfg, None, 256, jnp.float32)
    (pc, lg), (pc2, lg2) = (loop.prefill(*args, pack=x) for x in (None, (jnp.asarray(pack), jnp.asarray(unpack_at))))
    tol = dict(rtol=0, atol=5e-6) if dtype == "float32" else dict(rtol=0, atol=2.0 ** -6)
    np.testing.assert_allclose(np.asarray(lg2), np.asarray(lg), **tol)
    for a, b in zip(pc.k + pc.v, pc2.k + pc2.v):  # k [P, K, D, T], v [P, K, T, D]
        a, b = np.asarray(a), np.asarray(b)
        slots = valid[:, None, None, :] if a.shape[-1] == t else valid[:, None, :, None]
        np.testing.assert_allclose(np.where(slots, b, 0), np.where(slots, a, 0), **tol)
