"""The tokenizer of a llama.cpp GGUF file, as a `transformers.PreTrainedTokenizerFast`.

Byte-level BPE vocabularies ("gpt2": SmolLM, Llama 3, Qwen) are rebuilt here with `tokenizers`
(see `gguf_tokenizer`); SentencePiece ones ("llama": Gemma, Phi-3, Llama 2) go through
transformers' own GGUF tokenizer converter. A file without a chat template gets its family's (Gemma 3's GGUFs carry none).
"""

from __future__ import annotations

import inspect
import os
import warnings
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, pre_tokenizers, processors
from tokenizers.models import BPE
from transformers import PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import bytes_to_unicode

from jaxevo.errors import UnsupportedModelError, WeightsError
from jaxevo.weights.gguf import _meta, _open

# Gemma 3's chat template (google/gemma-3-*-it tokenizer_config.json; llama.cpp writes none into
# gemma3 GGUFs): turns between <start_of_turn>{user|model} and <end_of_turn>, a system message
# folded into the first user turn.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    "    {%- set first_user_prefix = \"\" -%}\n"
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    "        {%- set role = \"model\" -%}\n"
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    "        {{ raise_exception(\"Invalid content type\") }}\n"
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\n'}}\n"
    "{%- endif -%}\n"
)
FAMILY_CHAT_TEMPLATES = {"gemma3": GEMMA3_CHAT_TEMPLATE}


# llama.cpp's `tokenizer.ggml.pre` names the pre-tokenizer its converter detected. Byte-level
# vocabularies differ only in how text is split before BPE.
# GPT-2's split, then digits one by one: SmolLM, StarCoder and friends (llama.cpp applies "\p{N}"
# first, exactly `pre_tokenizers.Digits(individual_digits=True)`).
_DIGITS_THEN_GPT2 = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"}
_GPT2 = {"default", "gpt2", "gpt-2", "mpt", "olmo", "jais"}
_SPLITS = {
    # Llama 3 (tiktoken-style): digits in groups of up to three.
    **dict.fromkeys(
        ("llama3", "llama-v3", "llama-bpe", "smaug-bpe", "dbrx", "falcon3"),
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
        r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    ),
    # Qwen2: single digits.
    **dict.fromkeys(
        ("qwen2", "deepseek-r1-qwen"),
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
        r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    ),
}
_CONTROL, _USER_DEFINED = 3, 4  # llama.cpp token types


def _byte_level_pre_tokenizer(pre: str | None):
    if pre in _DIGITS_THEN_GPT2:
        return pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ])
    if pre in _SPLITS:
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(_SPLITS[pre]), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    if pre not in _GPT2 and pre is not None:
        warnings.warn(
            f"GGUF tokenizer.ggml.pre={pre!r} is unknown to jaxevo; splitting text like GPT-2. "
            "Token ids may differ from the original tokenizer around digits and whitespace.",
            stacklevel=3,
        )
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def _register_extra_specials(tok, tokens) -> None:
    """List `tokens` among the tokenizer's special tokens (the kwarg changed name in v5)."""
    params = inspect.signature(tok.add_special_tokens).parameters
    if "replace_extra_special_tokens" in params:  # transformers >= 5
        tok.add_special_tokens({"extra_special_tokens": tokens}, replace_extra_special_tokens=False)
    else:
        tok.add_special_tokens(
            {"additional_special_tokens": tokens}, replace_additional_special_tokens=False)


def gguf_tokenizer(path: str | os.PathLike):
    """A `transformers.PreTrainedTokenizerFast` for the GGUF file `path`, built without torch.

    Byte-level BPE from `tokenizer.ggml.tokens`/`merges`, split the way `tokenizer.ggml.pre` says,
    control tokens (`<|im_start|>`...) added as special tokens so they encode to single ids,
    user-defined tokens added as plain added tokens, BOS/EOS added only if the file's
    `add_bos_token`/`add_eos_token` flags say so, and the file's chat template.

    Differs on purpose from transformers' own GGUF tokenizer for `pre` = "smollm" (SmolLM2):
    transformers ignores `pre` there and splits with GPT-2's regex alone, while llama.cpp and the
    upstream tokenizer.json split numeric characters one by one first; we follow upstream, which
    changes the ids of whitespace runs before digits ("x  42") and of " ½"-like text.
    SentencePiece GGUFs (`tokenizer.ggml.model` = "llama": Gemma 3, Phi-3, Llama 2, Mistral) go
    through transformers' converter (`_sentencepiece_tokenizer`).
    """
    r = _open(path)
    arch = _meta(r, "general.architecture", "")
    model = _meta(r, "tokenizer.ggml.model", None)
    if model == "llama":
        return _sentencepiece_tokenizer(path, arch)
    if model != "gpt2":
        raise UnsupportedModelError(
            f"{Path(path).name}: GGUF tokenizer model {model!r} is not supported (jaxevo builds "
            "byte-level BPE, 'gpt2', and SentencePiece, 'llama'); load the tokenizer from a Hugging "
            "Face directory with tokenizer.json instead"
        )
    tokens = _meta(r, "tokenizer.ggml.tokens")
    types = _meta(r, "tokenizer.ggml.token_type", None) or [1] * len(tokens)
    merges = [tuple(m.split(" ", 1)) for m in _meta(r, "tokenizer.ggml.merges", [])]

    # Every regular token of a byte-level vocabulary is spelled in GPT-2's byte alphabet; a few
    # converters wrote some as raw UTF-8. Respell those so the BPE model can find them.
    spelling = bytes_to_unicode()
    alphabet = set(spelling.values())
    vocab = {
        t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8")): i
        for i, t in enumerate(tokens)
    }
    backend = Tokenizer(BPE(vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="",
                            end_of_word_suffix="", fuse_unk=False))
    backend.pre_tokenizer = _byte_level_pre_tokenizer(_meta(r, "tokenizer.ggml.pre", None))
    backend.decoder = decoders.ByteLevel()

    # A control token outside the byte alphabet is a llama.cpp mislabel (transformers skips those
    # too): adding it would grow the vocabulary past the embedding size.
    control = [AddedToken(t, special=True, normalized=False)
               for t, ty in zip(tokens, types) if ty == _CONTROL and set(t) <= alphabet]
    user = [AddedToken(t, special=False, normalized=False)
            for t, ty in zip(tokens, types) if ty == _USER_DEFINED and t in vocab]
    backend.add_special_tokens(control)
    backend.add_tokens(user)

    def special(key):
        i = _meta(r, f"tokenizer.ggml.{key}", None)
        return tokens[i] if i is not None and 0 <= i < len(tokens) else None

    bos, eos = special("bos_token_id"), special("eos_token_id")
    add_bos = bool(_meta(r, "tokenizer.ggml.add_bos_token", False)) and bos is not None
    add_eos = bool(_meta(r, "tokenizer.ggml.add_eos_token", False)) and eos is not None
    single = ([f"{bos}:0"] if add_bos else []) + ["$A:0"] + ([f"{eos}:0"] if add_eos else [])
    pair = single + ([f"{bos}:1"] if add_bos else []) + ["$B:1"] + ([f"{eos}:1"] if add_eos else [])
    backend.post_processor = processors.TemplateProcessing(
        single=single, pair=pair,
        special_tokens=[(t, vocab[t]) for t in dict.fromkeys((bos, eos)) if t in vocab],
    )

    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos,
        eos_token=eos,
        unk_token=special("unknown_token_id"),
        pad_token=special("padding_token_id"),
        add_bos_token=add_bos,
        add_eos_token=add_eos,
        chat_template=_meta(r, "tokenizer.chat_template", None),
        clean_up_tokenization_spaces=False,  # byte-level BPE decodes exactly; never "fix" spaces
        model_max_length=int(_meta(r, f"{arch}.context_length", 1 << 30)),
    )
    named = {bos, eos, special("unknown_token_id"), special("padding_token_id")}
    extra = [t for t in control if t.content not in named]
    if extra:
        _register_extra_specials(tok, extra)
    return tok


def _sentencepiece_tokenizer(path, arch: str):
    """A SentencePiece vocabulary through transformers' own GGUF tokenizer converter (the
    reference the real-model tests compare against), with the family's chat template when the
    file has none (Gemma 3's). Converting a 262k-token vocabulary takes tens of seconds; `load.py` does it
    once per file and caches the result with the converted weights."""
    p = Path(path).expanduser().resolve()
    try:
        tok = PreTrainedTokenizerFast.from_pretrained(str(p.parent), gguf_file=p.name, local_files_only=True)
    except Exception as e:
        raise WeightsError(f"{p.name}: cannot build its tokenizer ({type(e).__name__}: {e})") from e
    if not getattr(tok, "chat_template", None) and arch in FAMILY_CHAT_TEMPLATES:
        tok.chat_template = FAMILY_CHAT_TEMPLATES[arch]
    return tok
