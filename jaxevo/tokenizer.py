"""Chat prompts and stop tokens: what the sampler and the round driver need from a tokenizer.

The tokenizer itself (a `transformers.PreTrainedTokenizerFast`) is loaded with the model's files:
`jaxevo.weights.load.load_tokenizer`.
"""

from __future__ import annotations

from jaxevo.errors import JaxevoError

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


def chat_prompt(tok, user_text, system: str | None = None) -> str:
    """The prompt text for one user turn (a string) or a whole conversation (a list of
    {"role", "content"} messages, system turn included), ending where the assistant's reply starts.

    Uses the tokenizer's chat template (add_generation_prompt=True). Without a template the prompt
    is the plain text (the system text, if given, then a blank line first); a conversation needs
    a template.

    The template already writes any BOS the model wants, so encode the result with
    `tok(prompt, add_special_tokens=False)` to avoid a doubled BOS.
    """
    if not isinstance(user_text, str):  # a conversation: the template renders it as it is
        if not getattr(tok, "chat_template", None):
            raise JaxevoError("chat messages need a tokenizer with a chat template")
        messages = list(user_text)
        if system is not None and not (messages and messages[0].get("role") == "system"):
            messages.insert(0, {"role": "system", "content": system})
        return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
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
