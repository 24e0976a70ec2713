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

import collections
import re
from typing import Any, Iterable, Mapping, Sequence

from jaxevo.data.records import stable_hash

__all__ = ["topic_request", "variant_request", "parse_generated", "rouge_l", "Deduper", "new_item"]

TOPIC_REQUEST = ("Here are messages users sent to an assistant about {topic}:\n{examples}\n"
                 "Write one new message a user might send about {topic}, different from these. "
                 "Output only the message.")
VARIANT_REQUEST = ("A user sent this message to an assistant and liked the answer:\n{message}\n"
                   "Write one similar message with different details (other names and numbers). "
                   "Output only the message.")
MIN_WORDS, MAX_WORDS = 4, 80
_TOKEN = re.compile(r"[a-z0-9]+")
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


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F-measure of two texts over lower-cased alphanumeric tokens (0 when either is empty)."""
    ta, tb = _TOKEN.findall(a.lower()), _TOKEN.findall(b.lower())
    if not ta or not tb:
        return 0.0
    lcs = _lcs(ta, tb)
    if lcs == 0:
        return 0.0
    p, r = lcs / len(ta), lcs / len(tb)
    return 2 * p * r / (p + r)


class Deduper:
    """Keeps a text unless its ROUGE-L with a known text reaches `max_overlap` (known: the pool,
    then every text kept). Exact, with cheap pruning: LCS <= the multiset overlap m of the two
    token lists, so F <= 2m / (|a| + |b|), and texts below the threshold by that bound (or sharing
    no token) are never compared by LCS."""

    def __init__(self, known: Iterable[str], max_overlap: float):
        self.max_overlap = max_overlap
        self._texts: list[str] = []
        self._bags: list[collections.Counter] = []
        self._index: dict[str, set[int]] = {}
        for t in known:
            self._add(t)

    def _add(self, text: str) -> None:
        i = len(self._texts)
        bag = collections.Counter(_TOKEN.findall(text.lower()))
        self._texts.append(text)
        self._bags.append(bag)
        for tok in bag:
            self._index.setdefault(tok, set()).add(i)

    def keep(self, text: str) -> bool:
        """True (and remembered) when `text` is no near-duplicate of a known text."""
        bag = collections.Counter(_TOKEN.findall(text.lower()))
        n = sum(bag.values())
        near = set().union(*(self._index.get(t, set()) for t in bag))
        for i in near:
            other = self._bags[i]
            overlap = sum((bag & other).values())
            if 2 * overlap / max(1, n + sum(other.values())) < self.max_overlap:
                continue
            if rouge_l(text, self._texts[i]) >= self.max_overlap:
                return False
        self._add(text)
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
