"""Tokenizers and chat prompts.

`load_tokenizer` returns a `transformers.PreTrainedTokenizerFast` (no torch needed) from a Hugging
Face model directory or a `.gguf` file; `chat_prompt` and `stop_token_ids` are what the sampler
and the round driver need from it.
"""

from __future__ import annotations

import os
from pathlib import Path

from jaxevo.errors import WeightsError

# End-of-turn / end-of-text markers of common chat models. Generation stops at any of them that
# the vocabulary has, besides the tokenizer's own eos token.
STOP_TOKENS = (
    "<|im_end|>",  # ChatML: SmolLM, Qwen
    "<|eot_id|>",  # Llama 3 end of turn
    "<|eom_id|>",  # Llama 3.1 end of message (tool call)
    "<|end_of_text|>",  # Llama 3
    "<|endoftext|>",  # GPT-2 style end of document: SmolLM, Qwen, StarCoder
    "<|end|>",  # Phi-3
    "<end_of_turn>",  # Gemma
    "</s>",  # Llama 2, Mistral, TinyLlama
)


def load_tokenizer(path_or_dir: str | os.PathLike):
    """A `PreTrainedTokenizerFast` from a HF directory, its `tokenizer.json`, or a `.gguf` file.

    A directory needs `tokenizer.json` (plus optionally `tokenizer_config.json` for the special
    tokens and chat template); a directory holding a single `.gguf` and no `tokenizer.json` uses
    the GGUF. Files are read locally only, never downloaded.
    """
    p = Path(path_or_dir).expanduser()
    if not p.exists():
        raise WeightsError(f"tokenizer not found: {path_or_dir} does not exist")
    if p.is_file():
        if p.suffix == ".gguf":
            from jaxevo.weights.gguf import gguf_tokenizer

            return gguf_tokenizer(p)
        if p.name in ("tokenizer.json", "tokenizer_config.json"):
            p = p.parent
        else:
            raise WeightsError(
                f"cannot load a tokenizer from {p}: give a Hugging Face model directory "
                "(with tokenizer.json) or a .gguf file")
    if not (p / "tokenizer.json").is_file():
        ggufs = sorted(p.glob("*.gguf"))
        if len(ggufs) == 1:
            return load_tokenizer(ggufs[0])
        raise WeightsError(
            f"{p} has no tokenizer.json"
            + (f" and several .gguf files ({[g.name for g in ggufs]}); pass one of them" if ggufs
               else "; jaxevo needs a fast-tokenizer file (save one with "
                    "`AutoTokenizer.from_pretrained(...).save_pretrained(dir)`)"))
    from transformers import PreTrainedTokenizerFast

    try:
        return PreTrainedTokenizerFast.from_pretrained(str(p), local_files_only=True)
    except Exception as e:
        raise WeightsError(f"cannot load the tokenizer in {p}: {type(e).__name__}: {e}") from e


def chat_prompt(tok, user_text: str, system: str | None = None) -> str:
    """The prompt text for one user turn, ending where the assistant's reply starts.

    Uses the tokenizer's chat template (add_generation_prompt=True). Without a template the prompt
    is the plain text (the system text, if given, then a blank line first).

    The template already writes any BOS the model wants, so encode the result with
    `tok(prompt, add_special_tokens=False)` to avoid a doubled BOS.
    """
    if not getattr(tok, "chat_template", None):
        return user_text if system is None else f"{system}\n\n{user_text}"
    messages = [{"role": "system", "content": system}] if system is not None else []
    messages.append({"role": "user", "content": user_text})
    return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def stop_token_ids(tok) -> list[int]:
    """Token ids that end a generation: the eos id first, then every `STOP_TOKENS` marker the
    vocabulary has (e.g. `<|im_end|>`, `<|endoftext|>` for SmolLM2). No duplicates."""
    vocab = tok.get_vocab()
    ids = [tok.eos_token_id] if tok.eos_token_id is not None else []
    ids += [vocab[t] for t in STOP_TOKENS if t in vocab]
    return list(dict.fromkeys(ids))
