"""SELF's self-instructed prompts (Self-Instruct, Wang et al. 2023): the model writes new questions
from example questions; malformed ones and near-duplicates are filtered out.

    generate    k seed questions (some from earlier rounds' new ones) in a numbered list; the model
                continues it (`templates.SELF_INSTRUCT_TEMPLATE`); every numbered item it writes
                is a candidate (the last one dropped when the text was cut off)
    filter      `malformed`: empty, too few or too many words, not starting with a letter or
                digit, a banned word (Self-Instruct's list: images, files, plots...), an answer
                instead of a question ("The answer is ..."), a list label; `Shape`: lacking
                what (nearly) every pool question has (a final "?", a digit)
    dedup       `RougeIndex`: ROUGE-L F1 (LCS of lower-cased alphanumeric tokens, as the
                rouge-score package computes it without stemming) against the pool, the earlier
                rounds' new questions and those kept so far; kept only below the threshold

Texts compared are the questions (the record's `question` field where the source has one, else its
prompt): a source's fixed instructions around every question ("Solve it step by step...") would
make every pair look alike. A new question gets the seeds' wrapping back (`Wrapping`).
"""

from __future__ import annotations

import collections
import dataclasses
import random
import re
from typing import Any, Collection, Iterable, Mapping, Sequence

from jaxevo.data.records import stable_hash

_TOKEN = re.compile(r"[a-z0-9]+")
_ITEM = re.compile(r"^\s*(\d+)\s*[.)]\s*", re.M)  # "9. " / "9) " starting a line
_ANSWER = re.compile(r"\b(?:the\s+answer\s+is|answer\s*:|####)", re.I)
_LABEL = re.compile(r"^\s*(?:task|question|example|instruction|prompt|problem)\s*\d*\s*[:.]", re.I)


def tokens(text: str) -> list[str]:
    """ROUGE's tokens: lower-cased runs of letters and digits (rouge-score's default tokenizer,
    no stemming)."""
    return _TOKEN.findall(text.lower())


def normal(text: str) -> str:
    """A text's tokens joined: equal for texts that differ only in case and punctuation."""
    return " ".join(tokens(text))


def lcs(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (O(len a * len b))."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 of two texts: P = LCS/|candidate|, R = LCS/|reference|, F = 2PR/(P+R); 0 when
    either has no token."""
    a, b = tokens(candidate), tokens(reference)
    n = lcs(a, b)
    return 0.0 if n == 0 else 2 * n / (len(a) + len(b))


class RougeIndex:
    """Texts to deduplicate against: `near(text)` is the first text with ROUGE-L F1 >=
    `threshold`, or None. The token multiset overlap bounds the LCS, so most texts are ruled out
    without computing it (same answers as comparing with every text)."""

    def __init__(self, threshold: float, texts: Iterable[str] = ()):
        self.threshold = threshold
        self._rows: list[tuple[str, list[str], collections.Counter]] = []
        for t in texts:
            self.add(t)

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, text: str) -> None:
        toks = tokens(text)
        self._rows.append((text, toks, collections.Counter(toks)))

    def near(self, text: str) -> tuple[str, float] | None:
        toks = tokens(text)
        if not toks:
            return None
        counts = collections.Counter(toks)
        for other, otoks, ocounts in self._rows:
            if not otoks:
                continue
            total = len(toks) + len(otoks)
            bound = sum((counts & ocounts).values())
            if 2 * bound / total < self.threshold:
                continue
            f = 2 * lcs(toks, otoks) / total
            if f >= self.threshold:
                return other, f
        return None


def malformed(question: str, *, min_words: int, max_words: int, banned: Sequence[str]) -> str | None:
    """Why `question` is not a usable new question (None: it is)."""
    q = question.strip()
    if not q:
        return "empty"
    words = q.split()
    if len(words) < min_words:
        return "too_short"
    if len(words) > max_words:
        return "too_long"
    if not q[0].isalnum():
        return "not_an_instruction"
    if _ANSWER.search(q) or _LABEL.match(q):
        return "not_an_instruction"  # an answer, or a list label the model copied
    low = q.lower()
    if any(re.search(r"(?<!\w)" + re.escape(b) + r"(?!\w)", low) for b in banned):
        return "banned_word"
    return None


def parse_continuation(text: str, truncated: bool) -> list[str]:
    """The questions of a continued numbered list: the text up to the first item marker, then each
    marked item ("9. ...", "10) ..."); each cut at its first blank line, whitespace collapsed. With
    `truncated` (the generation hit its token limit) the last one is dropped: it may be cut off."""
    parts = [p for p in _ITEM.split(text)]
    # _ITEM.split alternates text and captured numbers: [head, n1, item1, n2, item2, ...]
    chunks = [parts[0]] + parts[2::2]
    out = [" ".join(c.strip().split("\n\n")[0].split()) for c in chunks]
    if truncated and out:
        out = out[:-1]
    return out


def question_of(item: Mapping[str, Any]) -> str:
    """The question a record asks: its `question` field, else its prompt."""
    q = item.get("question")
    return q if isinstance(q, str) and q.strip() else item["prompt"]


@dataclasses.dataclass(frozen=True)
class Wrapping:
    """The text a source puts around each question in its prompt (prefix, suffix): the most common
    one among the seeds (none when the prompt is the question)."""

    prefix: str = ""
    suffix: str = ""

    @classmethod
    def of(cls, items: Sequence[Mapping[str, Any]]) -> "Wrapping":
        seen = collections.Counter()
        for it in items:
            q, p = question_of(it), it["prompt"]
            i = p.find(q)
            seen[(p[:i], p[i + len(q):]) if i >= 0 else ("", "")] += 1
        return cls(*seen.most_common(1)[0][0]) if seen else cls()

    def __call__(self, question: str) -> str:
        return self.prefix + question + self.suffix


def request(template: str, seeds: Sequence[str]) -> str:
    """The Self-Instruct request for one generation: the seeds as a numbered list."""
    examples = "\n".join(f"{i}. {q}" for i, q in enumerate(seeds, 1))
    return template.format(examples=examples, next=len(seeds) + 1)


def draw_seeds(pool: Sequence[str], machine: Sequence[str], k: int, k_machine: int,
               rng: random.Random) -> list[str]:
    """k seed questions: up to `k_machine` from earlier rounds' new ones, the rest from the pool,
    shuffled (Self-Instruct: 6 human-written and 2 machine-written)."""
    m = rng.sample(list(machine), min(k_machine, len(machine)))
    h = rng.sample(list(pool), min(k - len(m), len(pool)))
    seeds = h + m
    rng.shuffle(seeds)
    return seeds


def new_item(question: str, wrapping: Wrapping, round_: int, template_item: Mapping[str, Any]) -> dict:
    """A record for a new question: no reference answer; the seeds' checker (the answer format
    asked) when they agree on one."""
    item = {"id": "si-" + stable_hash("self_instruct", question)[:16], "prompt": wrapping(question),
            "question": question, "self_instructed": True, "round": round_}
    if template_item.get("checker"):
        item["checker"] = template_item["checker"]
    return item


@dataclasses.dataclass(frozen=True)
class Shape:
    """What (nearly) every pool question has, asked of a new one: a final question mark, a digit.
    A 135M model continuing the list wrote statements ("Choose a different question.") as often
    as questions; on a pool of questions those are not of the same kind."""

    question_mark: bool = False
    digit: bool = False

    @classmethod
    def of(cls, questions: Sequence[str], share: float = 0.95) -> "Shape":
        qs = [q.strip() for q in questions]
        if not qs:
            return cls()
        return cls(sum(q.endswith("?") for q in qs) >= share * len(qs),
                   sum(any(c.isdigit() for c in q) for q in qs) >= share * len(qs))

    def misses(self, question: str) -> bool:
        q = question.strip()
        return (self.question_mark and not q.endswith("?")) or (self.digit and not any(c.isdigit() for c in q))


@dataclasses.dataclass
class Filtered:
    """What the filters did with a round's candidates."""

    kept: list[str] = dataclasses.field(default_factory=list)
    reasons: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def offer(self, question: str, index: RougeIndex, seeds: Sequence[str], settings,
              held_out: Collection[str] = (), shape: Shape = Shape()) -> bool:
        """Keep `question` if it is well formed, of the pool's `shape`, no copy of its seeds nor
        of a `held_out` question (`normal` forms: the evaluation's) and not near any indexed text
        (then it is indexed too); count the reason otherwise."""
        why = malformed(question, min_words=settings.min_words, max_words=settings.max_words,
                        banned=settings.banned)
        if why is None and shape.misses(question):
            why = "unlike_pool"
        norm = normal(question)
        if why is None and any(norm == normal(s) for s in seeds):
            why = "copy_of_seed"
        if why is None and norm in held_out:
            why = "held_out_question"
        if why is None and index.near(question) is not None:
            why = "near_duplicate"
        if why is not None:
            self.reasons[why] += 1
            return False
        index.add(question)
        self.kept.append(question)
        return True
