"""Tokenizer: the torch-free GGUF tokenizer against transformers, golden ids, chat helpers."""

from __future__ import annotations

import copy
import random
import unicodedata

import pytest

from jaxevo.errors import WeightsError
from jaxevo.tokenizer import chat_prompt, stop_token_ids
from jaxevo.weights.load import load_tokenizer

QUESTION = "What is 12+35?"
CHATML_PROMPT = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
                 "Face<|im_end|>\n<|im_start|>user\nWhat is 12+35?<|im_end|>\n<|im_start|>assistant\n")

# Ids of the upstream SmolLM2 tokenizer (digits split one by one, byte-level BPE), so the core
# suite checks the tokenizer without torch. Made with this module; all but the code line equal
# transformers' own GGUF tokenizer (see test_parity_with_transformers for the one difference).
GOLDEN = {
    "Hello, world!": [19556, 28, 905, 17],
    QUESTION: [1780, 314, 216, 33, 34, 27, 35, 37, 47],
    " leading space and 123456789": [2899, 1898, 284, 216, 33, 34, 35, 36, 37, 38, 39, 40, 41],
    # "  2": upstream keeps the two spaces together ("ĠĠ", 256); transformers' GGUF path gives 216, 216.
    "def f(x):\n\treturn x  *  2": [1604, 275, 24, 104, 727, 198, 197, 5406, 1792, 216, 1672, 256, 34],
    "你好，世界 🌍 café": [18645, 250, 48392, 138, 12831, 7906, 240, 178, 239, 230, 15107, 230, 231,
                         37366],
    CHATML_PROMPT: [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018,
                    411, 407, 19712, 8182, 2, 198, 1, 4093, 198, 1780, 314, 216, 33, 34, 27, 35, 37,
                    47, 2, 198, 1, 520, 9531, 198],
}


@pytest.fixture(scope="module")
def tok(gguf_path):
    return load_tokenizer(gguf_path)


# ------------------------------------------------------------------ torch-free


@pytest.mark.parametrize("text", list(GOLDEN))
def test_golden_ids(tok, text):
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids == GOLDEN[text]
    assert tok.decode(ids) == text


def test_special_tokens_are_single_ids(tok):
    assert (tok.bos_token, tok.eos_token, tok.unk_token, tok.pad_token) == (
        "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_end|>")
    assert tok.encode("<|im_start|>user\nhi<|im_end|><|endoftext|>") == [1, 4093, 198, 6004, 2, 0]
    assert "<repo_name>" in tok.all_special_tokens and len(tok) == 49152
    # The file says add_bos_token=False: plain encoding adds nothing.
    assert tok("hi")["input_ids"] == [6004]
    assert tok.decode([1, 6004, 2], skip_special_tokens=True) == "hi"


def test_chat_prompt_and_stop_ids(tok):
    assert chat_prompt(tok, QUESTION) == CHATML_PROMPT
    assert chat_prompt(tok, "hi", system="Be brief.") == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\n")
    assert stop_token_ids(tok) == [2, 0]  # <|im_end|> (eos), <|endoftext|>


def test_chat_prompt_without_template(tok):
    plain = copy.deepcopy(tok)
    plain.chat_template = None
    assert chat_prompt(plain, "2+2=") == "2+2="
    assert chat_prompt(plain, "2+2=", system="Answer.") == "Answer.\n\n2+2="


def test_hf_directory_round_trip(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    again = load_tokenizer(tmp_path)
    for text in GOLDEN:
        assert again(text)["input_ids"] == tok(text)["input_ids"]
    assert again.chat_template == tok.chat_template
    assert stop_token_ids(again) == stop_token_ids(tok)
    assert load_tokenizer(tmp_path / "tokenizer.json")("hi")["input_ids"] == [6004]


def test_missing_or_unusable_paths(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        load_tokenizer(tmp_path / "nope")
    with pytest.raises(WeightsError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"\0")
    with pytest.raises(WeightsError, match="cannot load a tokenizer"):
        load_tokenizer(tmp_path / "weights.bin")


# ------------------------------------------------------------------ parity with transformers

FRAGMENTS = [
    "Hello", "world", " the", "The quick brown fox", "jumps over", "don't", "I'm", "we'll", "IT'S",
    "123456789", "3.14159", "-42", "1,000,000", "2024-06-01", "12+35=47", "x^2", "½", "²", "Ⅻ", "٣",
    "café", "naïve", "Zürich", "Ελληνικά", "русский текст", "עברית", "العربية", "हिन्दी",
    "你好，世界", "日本語のテキスト", "한국어", "🌍", "👍🏽", "🧑‍💻", "😀😃", "é", "\u00a0", "\u200b",
    "def f(x):", "\treturn x", "    if a == b:", "{\"key\": [1, 2]}", "<div class=\"a\">", "a_b_c",
    "#include <stdio.h>", "SELECT * FROM t;", "$HOME/.cache", "https://example.com/a?b=1",
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<repo_name>", "<im_start>", "<|im_start",
    " ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\r\n", " \n ", "...", "!!", "?!", "--", "==>",
]


def parity_texts() -> list[str]:
    rng = random.Random(0)
    texts = list(GOLDEN) + FRAGMENTS + [" " + f for f in FRAGMENTS] + [f + "\n" for f in FRAGMENTS[:30]]
    for _ in range(250):
        pieces = rng.choices(FRAGMENTS, k=rng.randint(2, 7))
        seps = rng.choices(["", " ", "  ", "\t", "\n", "   "], k=len(pieces))
        texts.append("".join(s + p for s, p in zip(seps, pieces)))
    return texts


def digit_split_matters(text: str) -> bool:
    """Whether splitting numeric characters one by one before GPT-2's regex can change the ids:
    GPT-2's regex glues a space to the number after it (" ½" is one piece, and "ĠÂ" is a merge)
    and takes a whitespace run minus its last character before a number."""
    return any(i >= 1 and unicodedata.category(c).startswith("N")
               and (text[i - 1].isspace() or unicodedata.category(text[i - 1]).startswith("N"))
               for i, c in enumerate(text))


@pytest.fixture(scope="module")
def hf_tok(gguf_path):
    pytest.importorskip("torch")  # transformers' GGUF tokenizer path imports torch
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)


@pytest.mark.torch
def test_parity_with_transformers(tok, hf_tok):
    """Same ids and decodes as transformers' GGUF tokenizer on a few hundred varied strings.

    One deliberate difference: the file says `tokenizer.ggml.pre = "smollm"`, for which llama.cpp
    (and the upstream SmolLM2 tokenizer.json) split numeric characters one by one *before*
    GPT-2's regex; transformers ignores it and uses GPT-2's regex alone. The vocabulary has no
    multi-digit tokens, so this only shows around numbers after whitespace: "x  42" is upstream
    "ĠĠ" "4" "2" but "Ġ" "Ġ" "4" "2" in transformers, and " ½" is "Ġ" "½" vs "ĠÂ" "½"-bytes.
    For such strings we check against transformers' tokenizer given the upstream pre-tokenizer.
    """
    from tokenizers import pre_tokenizers

    upstream = copy.deepcopy(hf_tok)
    upstream.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    texts = parity_texts()
    assert len(texts) >= 300
    diverging = 0
    for text in texts:
        ours = tok(text)["input_ids"]
        ref = hf_tok(text)["input_ids"]
        if digit_split_matters(text):
            diverging += ours != ref
            ref = upstream(text)["input_ids"]
        assert ours == ref, text
        assert tok.decode(ours) == text == hf_tok.decode(ours), text
        assert tok.decode(ours, skip_special_tokens=True) == hf_tok.decode(ours, skip_special_tokens=True)
    assert diverging > 0  # the strings do exercise the difference
    # transformers marks the same 17 control tokens special in its backend but lists only the
    # named ones (bos/eos/unk/pad); we list all of them.
    assert set(hf_tok.all_special_ids) <= set(tok.all_special_ids) == set(range(17))


@pytest.mark.torch
def test_chat_template_renders_like_transformers(tok, hf_tok):
    convs = [
        [{"role": "user", "content": QUESTION}],
        [{"role": "system", "content": "Answer with a number."}, {"role": "user", "content": "2+2?"}],
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"},
         {"role": "user", "content": "  café 🌍\n\tcode"}],
    ]
    assert tok.chat_template == hf_tok.chat_template
    for conv in convs:
        for gen in (True, False):
            text = tok.apply_chat_template(conv, add_generation_prompt=gen, tokenize=False)
            assert text == hf_tok.apply_chat_template(conv, add_generation_prompt=gen, tokenize=False)
            assert tok(text)["input_ids"] == hf_tok(text)["input_ids"]


def test_gemma3_chat_template():
    """Gemma 3's template (added to gemma3 GGUFs, which carry none): turns between
    <start_of_turn>{user|model} and <end_of_turn>, the system text folded into the first user turn."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from jaxevo.weights.gguf_tokenizer import GEMMA3_CHAT_TEMPLATE

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE(vocab={"<bos>": 0}, merges=[])),
                                  bos_token="<bos>", chat_template=GEMMA3_CHAT_TEMPLATE)
    assert chat_prompt(tok, "Hi", system="Be brief.") == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n")
    chat = [{"role": "user", "content": " a "}, {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"}]
    assert tok.apply_chat_template(chat, tokenize=False) == (
        "<bos><start_of_turn>user\na<end_of_turn>\n<start_of_turn>model\nb<end_of_turn>\n"
        "<start_of_turn>user\nc<end_of_turn>\n")
