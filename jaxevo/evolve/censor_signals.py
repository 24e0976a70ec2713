"""The Censor's interaction signals, read from the logged texts of one exchange.

An exchange is the user's turn u_i, the assistant's answer a_i, the user's next turn u_{i+1}
(None when the log ends there) and the explicit feedback on a_i (rating 1-5, thumb up/down).
Every signal is in [0, 1], higher = more satisfied; a signal the exchange cannot give (no next
turn, no rating) is absent, and the satisfaction score renormalises over the present ones.

    explicit      rating (r-1)/4, thumb up 1 / down 0 (their mean when both)
    sentiment     of u_{i+1}: 0.5 + 0.5 (pos - neg) / (pos + neg) over `POSITIVE` / `NEGATIVE` words,
                  a word within two tokens after a negation ("not", "n't", "never", "no") in the
                  same clause flipped;
                  0.5 when it has none
    rephrase      1 - the highest word-set Jaccard similarity between a sentence of u_{i+1} and one
                  of u_i (content words, `STOPWORDS` removed): re-asking repeats the question
    correction    0 when u_{i+1} has a correction or contradiction marker (`CORRECTION`: "no,",
                  "that's wrong", "actually", "should be", "I don't think so", ...), else 1
    continuation  0 when u_{i+1} abandons (`ABANDON`: "never mind", "forget it", ...), else 1
    engagement    0 when it abandons; else min(1, new content words of u_{i+1} / `engagement_words`)
                  (words not already in u_i: a re-ask adds few)

The sentiment lexicon is jaxevo's own, hand-written for chat reactions (about 50 words each way;
no published lexicon is bundled). It is small on purpose: it is a transparent baseline that a
user can replace with `censor.quality` or their own signal, not a sentiment model.
"""

from __future__ import annotations

import re
from typing import Mapping

__all__ = ["text_signals", "sentiment", "similarity", "has_correction", "abandons", "engagement",
           "POSITIVE", "NEGATIVE", "CORRECTION", "ABANDON"]

POSITIVE = frozenset("""
thanks thank thx great perfect excellent awesome amazing good nice helpful helps helped right
correct exactly love lovely wonderful brilliant fantastic useful clear works worked appreciate
appreciated cool glad happy pleased yes yep sure impressive spot accurate fine neat superb ideal
super best well fabulous sweet remembering remembered""".split())
NEGATIVE = frozenset("""
wrong incorrect bad terrible awful useless unhelpful confusing confused annoying annoyed hmm
frustrating frustrated stupid nonsense mistake mistaken error false fail failed failing
disappointed disappointing poor worse worst ugh ignored ignore hate broken unclear long longer
sorry rubbish garbage pointless slow nope doubt incomplete missing irrelevant""".split())
_NEGATIONS = frozenset({"not", "no", "never", "n't", "dont", "don't", "didn't", "isn't", "wasn't",
                        "doesn't", "hardly"})
STOPWORDS = frozenset("""
a an the and or but if of to in on at for with by from as is are was were be been am do does did
i me my you your we our it its this that these those there here what which who how many much
can could would should will just so too very please let ask again quick question one more thing
have has had he she they them his her their about up out into""".split())
CORRECTION = re.compile(
    r"(^\s*no\b[\s,.!]|that'?s (?:not right|wrong|incorrect)|that is (?:not right|wrong|incorrect)|"
    r"\bis wrong\b|\bnot (?:right|correct)\b|\bincorrect\b|\bactually\b|\bshould be\b|\bit'?s not\b|"
    r"\bi said\b|\bi told you\b|\byou ignored\b|\bread (?:my|what)\b|\bdoesn'?t (?:look|sound|seem) right\b|"
    r"\bi don'?t think so\b|\bnot what i asked\b)", re.IGNORECASE)
ABANDON = re.compile(
    r"(\bnever ?mind\b|(?:^|[.!?,]\s*)(?:oh,? )?forget it\b|\bi'?ll figure it out\b|\bi give up\b|\bdon'?t bother\b|"
    r"\bi'?ll ask someone else\b|\bthis is pointless\b)", re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_SENTENCE = re.compile(r"[^.!?]+[.!?]*")
_CLAUSE = re.compile(r"[,.;:!?]")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _content(text: str) -> set[str]:
    return {w for w in _words(text) if w not in STOPWORDS}


def sentiment(text: str) -> float:
    """Lexicon sentiment of a user turn in [0, 1] (0.5 neutral); see the module docstring."""
    pos = neg = 0
    for clause in _CLAUSE.split(text):  # a negation reaches no further than its clause
        words = _words(clause)
        for i, w in enumerate(words):
            negated = any(x in _NEGATIONS or x.endswith("n't") for x in words[max(0, i - 2):i])
            if w in POSITIVE:
                pos, neg = (pos, neg + 1) if negated else (pos + 1, neg)
            elif w in NEGATIVE:
                # "not wrong" is rare praise; "isn't it wrong" is not: only softer words flip.
                pos, neg = (pos + 1, neg) if negated and w not in ("wrong", "mistake") else (pos, neg + 1)
    return 0.5 if pos + neg == 0 else 0.5 + 0.5 * (pos - neg) / (pos + neg)


def similarity(next_user: str, user: str) -> float:
    """Highest Jaccard similarity of content words between a sentence of `next_user` and one of
    `user` (sentences of fewer than 3 content words are ignored: "Thanks!" repeats nothing)."""
    def sentences(t: str) -> list[set[str]]:
        return [c for c in (_content(s) for s in _SENTENCE.findall(t)) if len(c) >= 3]
    best = 0.0
    for a in sentences(next_user):
        for b in sentences(user):
            best = max(best, len(a & b) / len(a | b))
    return best


def has_correction(text: str) -> bool:
    return CORRECTION.search(text) is not None


def abandons(text: str) -> bool:
    return ABANDON.search(text) is not None


def engagement(next_user: str, user: str, engagement_words: int = 8) -> float:
    """New content words of the next turn (not in the previous one), capped: 0 when it abandons."""
    if abandons(next_user):
        return 0.0
    return min(1.0, len(_content(next_user) - _content(user)) / max(1, engagement_words))


def text_signals(user: str, answer: str, next_user: str | None, rating: float | None = None,
                 thumb: str | None = None, engagement_words: int = 8) -> dict[str, float]:
    """The signals of one logged exchange (see the module docstring); absent ones are left out."""
    del answer  # the Censor reads the user's reaction; the answer itself is `quality`'s business
    s: dict[str, float] = {}
    explicit = [float(v) for v in ((float(rating) - 1) / 4 if rating is not None else None,
                                   {"up": 1.0, "down": 0.0}.get(thumb or "")) if v is not None]
    if explicit:
        s["explicit"] = sum(explicit) / len(explicit)
    if next_user is None:
        return s
    s["sentiment"] = sentiment(next_user)
    s["rephrase"] = 1.0 - similarity(next_user, user)
    s["correction"] = 0.0 if has_correction(next_user) else 1.0
    s["continuation"] = 0.0 if abandons(next_user) else 1.0
    s["engagement"] = engagement(next_user, user, engagement_words)
    return s


def logged_signals(item: Mapping, response: Mapping, engagement_words: int = 8) -> dict[str, float]:
    """`text_signals` of a response that carries its user's logged reaction (``reaction``)."""
    r = response["reaction"]
    return text_signals(item.get("prompt", ""), response["text"], r.get("next_user"), r.get("rating"),
                        r.get("thumb"), engagement_words)
