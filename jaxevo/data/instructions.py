"""The built-in unlabeled instruction task: task templates x topics, with checkable constraints.

Records: ``id``, ``prompt``, ``topic`` (a coarse label such as "cooking": DPSE's topic-aware
expansion groups by it), ``task`` (template name) and ``constraints`` (a list of dicts checked by
`jaxevo.data.constraints`). There is no gold answer: the constraints are the verifiable part, the
rest is for self-judgement or a Censor.
"""

from __future__ import annotations

import json
import random
from typing import Any, Iterable, Mapping

from jaxevo.data.base import Source, register_source
from jaxevo.data.records import Record, split_of, stable_hash
from jaxevo.errors import ConfigError

__all__ = ["generate_instructions", "instructions_source", "TOPICS", "TASK_TEMPLATES", "describe_constraint"]

TASK_TEMPLATES = {
    "story": "Write a short story about {x}.",
    "explain": "Explain {x} to a ten-year-old.",
    "tips": "Give practical tips for {x}.",
    "email": "Write an email to a friend about {x}.",
    "summary": "Summarize the main ideas behind {x}.",
    "poem": "Write a short poem about {x}.",
    "pros_cons": "List the pros and cons of {x}.",
    "mistake": "Describe a common mistake people make with {x} and how to avoid it.",
    "product": "Write a product description for a new gadget that helps with {x}.",
    "beginner": "A beginner asks: what should I know first about {x}? Answer them.",
    "blog": "Write the opening of a blog post about {x}.",
    "compare": "Compare two different approaches to {x}.",
}

# topic label -> (phrases, keywords a response on the topic can naturally include)
TOPICS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "cooking": (("cooking pasta at home", "baking bread", "cooking on a budget"), ("recipe", "oven", "salt", "kitchen")),
    "travel": (("travelling by train", "packing for a long trip", "visiting a new city"), ("ticket", "map", "luggage", "journey")),
    "finance": (("saving money each month", "making a household budget", "paying off debt"), ("budget", "savings", "income", "expenses")),
    "fitness": (("starting to run", "building a home workout", "stretching after exercise"), ("muscles", "routine", "water", "rest")),
    "gardening": (("growing tomatoes", "keeping houseplants alive", "starting a vegetable garden"), ("soil", "seeds", "sunlight", "water")),
    "programming": (("learning Python", "debugging code", "writing unit tests"), ("function", "error", "code", "test")),
    "astronomy": (("watching the night sky", "the planets of the solar system", "how stars form"), ("telescope", "planet", "orbit", "light")),
    "history": (("the invention of printing", "ancient Rome", "the history of bicycles"), ("century", "empire", "invention", "people")),
    "music": (("learning the guitar", "writing a song", "practising an instrument"), ("melody", "rhythm", "practice", "chords")),
    "pets": (("caring for a new puppy", "keeping a cat happy", "choosing a pet"), ("food", "walk", "vet", "play")),
    "climate": (("reducing home energy use", "how weather differs from climate", "planting trees in cities"), ("energy", "carbon", "temperature", "trees")),
    "sleep": (("sleeping better", "building a bedtime routine", "napping"), ("bedtime", "rest", "screen", "dark")),
    "chess": (("learning chess", "chess openings", "improving at chess"), ("board", "pieces", "king", "move")),
    "recycling": (("recycling at home", "reducing plastic waste", "composting"), ("plastic", "bins", "waste", "reuse")),
    "careers": (("preparing for a job interview", "writing a CV", "asking for a raise"), ("interview", "skills", "experience", "questions")),
    "photography": (("taking photos with a phone", "photographing landscapes", "using natural light"), ("camera", "light", "photo", "angle")),
}

_FORBIDDEN = ("very", "really", "thing", "good", "just", "basically")
_JSON_KEYS = (("title", "body"), ("summary",), ("title", "points"), ("answer", "reason"))
_ENDINGS = ("Is there anything else I can help with?", "Thanks for reading.", "That is all.")
_STARTS = ("Sure.", "Here is my answer:", "Great question!")
# Pairs that cannot both hold (or make the task silly). Checked symmetrically.
_CONFLICTS = {
    "json": {"bullet_count", "paragraph_count", "sentence_count", "ends_with", "starts_with", "no_commas"},
    "bullet_count": {"paragraph_count", "sentence_count"},
    "lowercase": {"ends_with", "starts_with"},
}
CONSTRAINT_TYPES = ("word_count", "sentence_count", "bullet_count", "paragraph_count", "keywords",
                    "forbidden_words", "json", "lowercase", "no_commas", "ends_with", "starts_with")


def _conflict(a: str, b: str) -> bool:
    return b in _CONFLICTS.get(a, ()) or a in _CONFLICTS.get(b, ())


def _make(kind: str, r: random.Random, keywords: tuple[str, ...]) -> dict[str, Any]:
    """Random parameters for one constraint type."""
    if kind == "word_count":
        return {"type": kind, **r.choice([{"max": 50}, {"max": 100}, {"min": 30, "max": 80}, {"min": 80}])}
    if kind == "sentence_count":
        return {"type": kind, **r.choice([{"max": 3}, {"max": 5}, {"min": 2, "max": 2}, {"min": 4}])}
    if kind == "bullet_count":
        return {"type": kind, "exact": r.randint(3, 5)}
    if kind == "paragraph_count":
        return {"type": kind, "exact": r.randint(2, 3)}
    if kind == "keywords":
        return {"type": kind, "words": sorted(r.sample(keywords, r.randint(1, 2)))}
    if kind == "forbidden_words":
        return {"type": kind, "words": [r.choice(_FORBIDDEN)]}
    if kind == "json":
        return {"type": kind, "keys": list(r.choice(_JSON_KEYS))}
    if kind == "ends_with":
        return {"type": kind, "text": r.choice(_ENDINGS)}
    if kind == "starts_with":
        return {"type": kind, "text": r.choice(_STARTS)}
    return {"type": kind}  # lowercase, no_commas


def _quote_list(words: list[str]) -> str:
    quoted = [f"'{w}'" for w in words]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def describe_constraint(c: Mapping[str, Any]) -> str:
    """The sentence of the prompt that states constraint `c`."""
    kind = c["type"]
    if kind in ("word_count", "sentence_count"):
        unit = "words" if kind == "word_count" else "sentences"
        lo, hi = c.get("min"), c.get("max")
        if lo is not None and hi is not None:
            return f"Use exactly {lo} {unit}." if lo == hi else f"Use between {lo} and {hi} {unit}."
        return f"Use at most {hi} {unit}." if hi is not None else f"Use at least {lo} {unit}."
    text = {
        "bullet_count": lambda: f"Format the answer as exactly {c.get('exact')} bullet points, each line starting with '- '.",
        "paragraph_count": lambda: f"Write exactly {c.get('exact')} paragraphs separated by blank lines.",
        "keywords": lambda: f"Include the word{'s' if len(c['words']) > 1 else ''} {_quote_list(c['words'])}.",
        "forbidden_words": lambda: f"Do not use the word{'s' if len(c['words']) > 1 else ''} {_quote_list(c['words'])}.",
        "json": lambda: "Answer only with a JSON object" + (f" with the keys {_quote_list(c['keys'])}." if c.get("keys") else "."),
        "lowercase": lambda: "Write everything in lowercase letters, with no capital letters at all.",
        "no_commas": lambda: "Do not use any commas.",
        "ends_with": lambda: f"End your answer with the exact sentence '{c['text']}'",
        "starts_with": lambda: f"Start your answer with '{c['text']}'",
    }
    if kind not in text:
        raise ConfigError(f"unknown constraint type {kind!r}")
    return text[kind]()


def generate_instructions(n: int, *, split: str = "train", seed: int = 0, topics: Iterable[str] | None = None,
                          max_constraints: int = 2, test_fraction: float = 0.2) -> list[Record]:
    """`n` distinct instruction prompts of `split` with 0..`max_constraints` constraints each (at
    least one when `max_constraints` > 0). The split hashes (task, topic phrase, constraints)."""
    if split not in ("train", "test"):
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    if not 0 <= max_constraints <= 4:
        raise ConfigError(f"instructions: max_constraints must be in 0..4, got {max_constraints}")
    chosen = list(TOPICS) if topics is None else list(topics)
    unknown = sorted(set(chosen) - set(TOPICS))
    if unknown or not chosen:
        raise ConfigError(f"instructions: unknown or no topics {unknown}; available: {list(TOPICS)}")
    rng = random.Random(int(stable_hash("instructions", seed, split)[:16], 16))
    records: list[Record] = []
    seen: set[str] = set()
    for _ in range(200 * n + 2000):
        if len(records) >= n:
            break
        topic = rng.choice(chosen)
        phrases, keywords = TOPICS[topic]
        phrase, task = rng.choice(phrases), rng.choice(sorted(TASK_TEMPLATES))
        constraints: list[dict[str, Any]] = []
        for _k in range(rng.randint(1, max_constraints) if max_constraints else 0):
            options = [t for t in CONSTRAINT_TYPES
                       if all(t != c["type"] and not _conflict(t, c["type"]) for c in constraints)]
            constraints.append(_make(rng.choice(options), rng, keywords))
        canonical = (task, phrase, json.dumps(constraints, sort_keys=True))
        prompt = " ".join([TASK_TEMPLATES[task].format(x=phrase)] + [describe_constraint(c) for c in constraints])
        if split_of(canonical, test_fraction) != split or prompt in seen:
            continue
        seen.add(prompt)
        records.append({"id": "instr-" + stable_hash(prompt)[:16], "prompt": prompt, "topic": topic,
                        "task": task, "constraints": constraints})
    if len(records) < n:
        raise ConfigError(f"instructions: only {len(records)} distinct {split} prompts available; ask for fewer")
    return records


@register_source("instructions", keys=("split", "n", "seed", "topics", "max_constraints", "test_fraction"))
def instructions_source(spec: Mapping[str, Any]) -> Source:
    """``{"type": "instructions", "split": "train", "n": 500, "seed": 0, "topics": ["cooking"]}``."""
    split = spec.get("split", "train")
    records = generate_instructions(int(spec.get("n", 500)), split=split, seed=int(spec.get("seed", 0)),
                                    topics=spec.get("topics"), max_constraints=int(spec.get("max_constraints", 2)),
                                    test_fraction=float(spec.get("test_fraction", 0.2)))
    return Source.from_records(f"instructions ({split})", records)
