"""Tiny models with a real (byte-level BPE, ChatML) tokenizer for sampler tests; no torch needed."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from jaxevo.models.config import ModelConfig
from tests.conftest import TINY_HF, random_params

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
VOCAB = 256 + len(SPECIALS)  # bytes, then the specials
PAD, IM_START, IM_END = 256, 257, 258
# Varied prompt lengths (4 prompt buckets) and, with 8 stop ids, varied completion lengths.
MIXED_PROMPTS = [list(np.random.RandomState(i).randint(0, 256, size=n))
                 for i, n in enumerate([5, 1, 17, 9, 30, 2, 12, 23, 40, 3, 7])]
MIXED_STOPS = tuple(range(10, 18))
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tiny_hf(family: str = "llama3", vocab: int = VOCAB) -> dict:
    """A family of tests/conftest.py's TINY_HF with this tokenizer's vocabulary and specials
    ("mistral-sw" and "gemma3" have windows shorter than the test prompts)."""
    return dict(TINY_HF[family], vocab_size=vocab, eos_token_id=IM_END, pad_token_id=PAD,
                bos_token_id=None)


def tiny(family: str = "llama3", seed: int = 0, vocab: int = VOCAB, **runtime):
    cfg = ModelConfig.from_hf(tiny_hf(family, vocab), **runtime)
    return cfg, random_params(cfg, seed)


@functools.lru_cache(maxsize=None)
def byte_tokenizer():
    """A PreTrainedTokenizerFast: 256 byte tokens (GPT-2 byte alphabet, no merges) + ChatML specials."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = _bytes_to_unicode()
    vocab = {alphabet[b]: b for b in range(256)}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<|endoftext|>", eos_token="<|im_end|>",
                                  additional_special_tokens=["<|im_start|>"])
    tok.chat_template = CHATML
    assert tok.convert_tokens_to_ids(list(SPECIALS)) == [PAD, IM_START, IM_END], tok.convert_tokens_to_ids(list(SPECIALS))
    return tok


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def tiny_model_dir(tmp: Path, family: str = "llama3", seed: int = 0) -> Path:
    """A HF directory (config, safetensors, tokenizer) that `load_pretrained` and transformers load."""
    from jaxevo.weights.hf import export_hf

    cfg, params = tiny(family, seed)
    return export_hf(params, cfg, Path(tmp) / f"tiny-{family}", tokenizer=byte_tokenizer())


def assert_same_completions(a, b):
    """Two generate results hold the same tokens, texts, finishes and (to 1e-6) log-probs."""
    for o_a, o_b in zip(a, b, strict=True):
        for x, y in zip(o_a, o_b, strict=True):
            assert x.token_ids == y.token_ids
            assert x.finish_reason == y.finish_reason and x.text == y.text
            np.testing.assert_allclose(x.token_logprobs, y.token_logprobs, rtol=0, atol=1e-6)
            assert (x.prompt_index, x.sample_index) == (y.prompt_index, y.sample_index)
