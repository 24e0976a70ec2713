"""The token ids a reward model reads for one (prompt, completion), as TRL's RewardTrainer builds
them — written once, so training a reward model (`jaxevo.train.score_head`) and scoring with it
(`jaxevo.judging.reward_model.RewardModel`) read the very same tokens.

    ids = conversation_ids(tokenizer, "What is 2+2?", "4.")                  # [n] ints
    ids = conversation_ids(tokenizer, [{"role": "user", "content": "Hi"}], "Hello!")

With a chat template: the prompt as its user turn (or the given messages) and the completion as
the assistant turn, rendered by the tokenizer's own template (`apply_chat_template`, no generation
prompt). Without one: prompt + completion + eos, tokenised with the tokenizer's special tokens.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from jaxevo.errors import WeightsError

Prompt = str | Sequence[Mapping[str, str]]


def conversation_ids(tokenizer: Any, prompt: Prompt, completion: str) -> list[int]:
    """The ids of the conversation ``prompt`` -> ``completion`` (see the module doc)."""
    tok = tokenizer
    if getattr(tok, "chat_template", None):
        msgs = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        msgs.append({"role": "assistant", "content": completion})
        return list(tok.apply_chat_template(msgs, tokenize=True, return_dict=True)["input_ids"])
    if not isinstance(prompt, str):
        raise WeightsError("the reward model's tokenizer has no chat template: give plain-text prompts")
    text = prompt + completion
    if tok.eos_token and not text.endswith(tok.eos_token):
        text += tok.eos_token
    return list(tok(text)["input_ids"])
