"""A simulated user who reacts to an assistant's answer the way the DPSE Censor expects real users to.

`simulate_user_reaction(item, assistant_answer, rng)` is a pure function of the dialogue step
(its question ``prompt``, its gold ``answer`` or the stated fact) and the assistant's reply; the
rng only picks among reactions of the same quality class (a correction or a re-ask for a wrong
answer), so a given seed gives the same reaction every time. The returned ``signals`` are the
Censor's interaction signals (METHODS.md §4.2), each in [0, 1], higher = more satisfied.

Quality classes (`answer_quality`):
  correct  - the gold answer, stated concisely                         -> praise/thanks, rating 4-5
  verbose  - correct, but buried in more than `VERBOSE_WORDS` words      -> mild complaint, rating 3-4
  wrong    - a different answer, or a hedge naming the gold and a distractor -> correction / re-ask /
             complaint / abandonment, rating 1-2
  empty    - nothing usable                                               -> abandonment or complaint, rating 1
  ack      - (fact statements) the fact was acknowledged                  -> continue, rating 4-5
  no_ack   - (fact statements) the reply ignored or contradicted the fact -> complaint, rating 2
"""

from __future__ import annotations

import random
import re
from typing import Any, Mapping

from jaxevo.data.answers import check_probe, extract_answer, normalize_number
from jaxevo.data.constraints import count_words
from jaxevo.data.records import stable_hash

__all__ = ["simulate_user_reaction", "answer_quality", "VERBOSE_WORDS", "QUALITY"]

VERBOSE_WORDS = 120
QUALITY = {"correct": 1.0, "ack": 0.9, "verbose": 0.7, "no_ack": 0.3, "wrong": 0.2, "empty": 0.0}

# reaction kind -> (ratings to choose from, sentiment, engagement, texts). "{gold}" and "{question}"
# are filled in. Engagement is how invested the user stays, not raw length: a re-ask quoting the
# question is long but disengaged.
_REACTIONS: dict[str, tuple[tuple[int, ...], float, float, tuple[str, ...]]] = {
    "praise": ((5,), 1.0, 0.9, ("Perfect, thank you! That's exactly what I needed.", "Great, that's right. Thanks a lot!")),
    "thanks": ((4, 5), 0.8, 0.8, ("Thanks, that helps.", "Got it, thank you.", "OK, thanks!")),
    "continue": ((4, 5), 0.7, 0.8, ("Thanks for remembering that.", "Good, keep that in mind.", "Right, exactly.")),
    "mild_complaint": ((3, 4), 0.5, 0.6, ("Thanks, but that was much longer than it needed to be.",
                                           "OK, though a shorter answer would have been nicer.")),
    "correction": ((1, 2), 0.2, 0.5, ("No, that's not right. It should be {gold}.", "That's wrong, the answer is {gold}.")),
    "rephrase": ((1, 2), 0.3, 0.4, ("Hmm, I don't think so. Let me ask again: {question}", "That doesn't look right. {question}")),
    "complaint": ((1, 2), 0.0, 0.3, ("That's wrong.", "That's not helpful at all.", "No. Please read my question.")),
    "ignored": ((2,), 0.2, 0.4, ("Did you even read what I said?", "You ignored what I just told you.")),
    "abandon": ((1,), 0.1, 0.0, ("Never mind, I'll figure it out myself.", "Forget it.")),
}
# quality class -> (reaction kinds, their weights)
_POLICY: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "correct": (("praise", "thanks"), (0.5, 0.5)),
    "verbose": (("mild_complaint", "thanks"), (0.7, 0.3)),
    "wrong": (("correction", "rephrase", "complaint", "abandon"), (0.4, 0.3, 0.2, 0.1)),
    "empty": (("abandon", "rephrase", "complaint"), (0.5, 0.3, 0.2)),
    "ack": (("continue", "thanks"), (0.6, 0.4)),
    "no_ack": (("ignored", "complaint"), (0.7, 0.3)),
}

_TOKEN_RE = re.compile(r"[a-z0-9']+")


def _similarity(a: str, b: str) -> float:
    """Jaccard similarity of lower-cased word sets: the Censor's rephrase signal is 1 - sim."""
    ta, tb = set(_TOKEN_RE.findall(a.lower())), set(_TOKEN_RE.findall(b.lower()))
    return len(ta & tb) / len(ta | tb) if ta and tb else 0.0


def _final_number(text: str) -> str | None:
    """What a user reading the reply takes as its answer: a strictly formatted one if present,
    else the last number (people read "12 + 35 = 47" as 47; this is a user model, not a grader)."""
    return extract_answer(text, fallback=True)


def answer_quality(item: Mapping[str, Any], answer: str | None) -> tuple[str, float]:
    """(quality class, score in [0, 1]) of a reply to a dialogue step; see the module docstring.

    Steps with ``kind`` "fact"/"update" carry ``value`` (the stated fact) and no gold answer; the
    rest carry the gold ``answer`` and optional ``distractors`` (outdated values of the fact)."""
    text = (answer or "").strip()
    if not text:
        return "empty", QUALITY["empty"]
    distractors = list(item.get("distractors", ()))
    if item.get("kind") in ("fact", "update") or item.get("answer") is None:
        value = item.get("value")
        if value is None:
            return "ack", QUALITY["ack"]
        # Acknowledging without the value is fine; naming only an outdated value is not.
        contradicted = (any(check_probe(text, d) for d in distractors if str(d) != str(value))
                        and not check_probe(text, str(value)))
        return ("no_ack", QUALITY["no_ack"]) if contradicted else ("ack", QUALITY["ack"])
    gold = str(item["answer"])
    if normalize_number(gold) is not None:
        correct = _final_number(text) == normalize_number(gold) and check_probe(text, gold, distractors)
    else:
        correct = check_probe(text, gold, distractors)
    if not correct:
        return "wrong", QUALITY["wrong"]
    if count_words(text) > VERBOSE_WORDS:
        return "verbose", QUALITY["verbose"]
    return "correct", QUALITY["correct"]


def _rng(rng: random.Random | int | None, item: Mapping[str, Any], answer: str | None) -> random.Random:
    if isinstance(rng, random.Random):
        return rng
    # No rng: derive one from the inputs so the function stays pure.
    return random.Random(int(stable_hash("user_sim", rng, item.get("id"), item.get("prompt"), answer)[:16], 16))


def simulate_user_reaction(item: Mapping[str, Any], assistant_answer: str | None,
                           rng: random.Random | int | None = None) -> dict[str, Any]:
    """The user's next turn after `assistant_answer` to dialogue step `item`, and its signals.

    Args:
      item: a dialogue step (``prompt``, ``answer`` gold or None, ``kind``, optional ``value`` and
        ``distractors``) or any record with ``prompt`` and ``answer``.
      assistant_answer: the model's reply.
      rng: a ``random.Random`` (consumed), an int seed, or None (seed from the inputs).

    Returns ``{"text", "kind", "rating" (1-5), "quality" (class), "score", "abandon",
    "signals": {"explicit", "sentiment", "continuation", "rephrase", "correction", "engagement"}}``.
    """
    r = _rng(rng, item, assistant_answer)
    quality, score = answer_quality(item, assistant_answer)
    kinds, weights = _POLICY[quality]
    kind = r.choices(kinds, weights)[0]
    ratings, sentiment, engagement, texts = _REACTIONS[kind]
    rating = r.choice(ratings)
    question = str(item.get("prompt", ""))
    text = r.choice(texts).format(gold=item.get("answer"), question=question)
    signals = {
        "explicit": (rating - 1) / 4,
        "sentiment": sentiment,
        "continuation": 0.0 if kind == "abandon" else 1.0,
        # Re-asking repeats the question; a reply that moves on shares few words with it.
        "rephrase": round(1.0 - _similarity(text, question), 6) if question else 1.0,
        "correction": 0.0 if kind == "correction" else 1.0,
        "engagement": engagement,
    }
    return {"text": text, "kind": kind, "rating": rating, "quality": quality, "score": score,
            "abandon": kind == "abandon", "signals": signals}
