"""DPSE's two generative expansions, the pure parts: the model's writing prompts, what counts as a
well-formed new user prompt, and near-duplicate removal (METHODS.md §4.2 [I]).

* Topic-aware: for each of the worst-satisfied frequent topics, the model reads a few of that
  topic's logged user turns and writes new ones (Self-Instruct style) — new prompts, not more
  draws from the pool.
* Preference-driven: for each well-received exchange (satisfaction >= a threshold), the model
  writes a variant of the user's request with different details, so the next answers are
  sampled around what users liked.

New prompts are kept when well formed (`parse_generated`) and when their ROUGE-L F-measure
against every pool prompt and every prompt kept before them is below `max_overlap` (0.7, the
Self-Instruct threshold). The stage that runs them is `expand` (evolve/stages/dpse.py).
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, Sequence

from jaxevo.data.records import stable_hash
from jaxevo.evolve.self_instruct import RougeIndex, rouge_l  # noqa: F401  (rouge_l: part of this module's API)

__all__ = ["topic_request", "variant_request", "parse_generated", "rouge_l", "Deduper", "new_item"]

TOPIC_REQUEST = ("Here are messages users sent to an assistant about {topic}:\n{examples}\n"
                 "Write one new message a user might send about {topic}, different from these. "
                 "Output only the message.")
VARIANT_REQUEST = ("A user sent this message to an assistant and liked the answer:\n{message}\n"
                   "Write one similar message with different details (other names and numbers). "
                   "Output only the message.")
MIN_WORDS, MAX_WORDS = 4, 80
_LEAD = re.compile(r"^\s*(?:new message|message|user|question|\d+[.)])\s*:?\s*", re.IGNORECASE)


def topic_request(topic: str, seeds: Sequence[str]) -> str:
    """The model's prompt to write a new user message on `topic`, from its seed messages."""
    examples = "\n".join(f"{i + 1}. {' '.join(s.split())}" for i, s in enumerate(seeds))
    return TOPIC_REQUEST.format(topic=topic, examples=examples)


def variant_request(message: str) -> str:
    return VARIANT_REQUEST.format(message=" ".join(message.split()))


def parse_generated(text: str | None) -> str | None:
    """The new user message in a generation, or None when malformed: empty, fewer than
    `MIN_WORDS` or more than `MAX_WORDS` words, no letters, or the instructions echoed."""
    if not text:
        return None
    line = next((ln for ln in (l.strip() for l in text.strip().splitlines()) if ln), "")
    line = _LEAD.sub("", line).strip().strip('"').strip()
    words = line.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS or not re.search(r"[A-Za-z]", line):
        return None
    low = line.lower()
    if "write one" in low or "output only" in low or low.startswith(("here are", "a user sent")):
        return None
    return line


class Deduper:
    """Keeps a text unless its ROUGE-L F1 with a known text (the pool, then every text kept)
    reaches `max_overlap`; SELF's `RougeIndex` (exact, with its overlap bound) does the search."""

    def __init__(self, known: Iterable[str], max_overlap: float):
        self._index = RougeIndex(max_overlap, known)

    def keep(self, text: str) -> bool:
        """True (and remembered) when `text` is no near-duplicate of a known text."""
        if self._index.near(text) is not None:
            return False
        self._index.add(text)
        return True


def new_item(prompt: str, topic: str | None, how: str, like: Mapping[str, Any]) -> dict[str, Any]:
    """A generated prompt as a record: no gold answer, no labels, no logged reaction; the system
    turn of the record it was made from (`like`), if any, kept."""
    messages = [m for m in like.get("messages") or () if m.get("role") == "system"]
    rec: dict[str, Any] = {"id": f"exp-{stable_hash(how, prompt)[:16]}", "prompt": prompt, "topic": topic,
                           "expanded": how, "from": like.get("id")}
    if messages:
        rec["messages"] = messages + [{"role": "user", "content": prompt}]
    return rec
