"""The built-in multi-session dialogue task: a simulated user across sessions, with memory probes.

A dialogue record has ``id``, ``prompt`` (the first user turn), ``topic``, ``task`` ("dialogue"),
``sessions`` (a list of sessions, each a list of *steps*), ``probes`` (the probe steps, also found
in ``sessions``) and ``facts`` (the final value of each fact slot).

A step is a record-like dict the driver plays one at a time: ``id``, ``kind`` ("fact", "update",
"question" or "probe"), ``prompt`` (the user's turn), ``answer`` (gold, None for fact statements),
``topic``, ``session``; facts/updates add ``slot`` and ``value``; probes add ``slot``,
``distractors`` (outdated values that must not be given) and ``fact_session`` (where the fact was
last stated, always an earlier session). After each assistant reply the driver calls
`jaxevo.data.user_sim.simulate_user_reaction(step, reply, rng)` for the user's reaction and the
Censor's signals; `jaxevo.data.answers.check_probe` scores the probes (long-term memory).
"""

from __future__ import annotations

import json
import random
from typing import Any, Mapping

from jaxevo.data.arithmetic_templates import TEMPLATES
from jaxevo.data.base import Source, register_source
from jaxevo.data.records import Record, split_of, stable_hash
from jaxevo.errors import ConfigError

__all__ = ["generate_dialogues", "dialogues_source", "FACT_SLOTS", "DIALOGUE_TOPICS"]

# slot -> (statement, update statement, probe question, values)
FACT_SLOTS: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "dog_name": ("My dog is called {v}.", "We renamed our dog: he is called {v} now.", "What is my dog's name?",
                 ("Rex", "Bella", "Max", "Luna", "Charlie", "Daisy", "Milo", "Biscuit")),
    "cat_name": ("My cat's name is {v}.", "Our cat has a new name now: {v}.", "What is my cat called?",
                 ("Whiskers", "Misty", "Oscar", "Tiger", "Pepper", "Simba", "Nala", "Ginger")),
    "sister_name": ("My sister's name is {v}.", "Sorry, I got that wrong before: my sister is {v}.", "What is my sister's name?",
                    ("Clara", "Priya", "Hannah", "Ingrid", "Fatima", "Julia", "Keiko", "Rosa")),
    "city": ("I live in {v}.", "We just moved, I live in {v} now.", "Which city do I live in?",
             ("Lisbon", "Oslo", "Toronto", "Nairobi", "Kyoto", "Dublin", "Lima", "Krakow")),
    "job": ("I work as a {v}.", "I changed jobs, I'm a {v} now.", "What is my job?",
            ("nurse", "teacher", "baker", "pilot", "plumber", "librarian", "chemist", "carpenter")),
    "children": ("I have {v} children.", "We had another baby, so now I have {v} children.", "How many children do I have?",
                 ("2", "3", "4", "5", "6")),
    "birth_month": ("I was born in {v}.", "Correction: I was born in {v}, not the month I said.", "In which month was I born?",
                    ("January", "March", "May", "July", "September", "November")),
    "car_colour": ("My car is {v}.", "I repainted my car, it's {v} now.", "What colour is my car?",
                   ("red", "blue", "green", "silver", "yellow", "black")),
}
_LEADS = ("By the way, ", "Just so you know, ", "", "Oh, and ")
_Q_LEADS = ("Quick question: ", "Can you help me? ", "", "One more thing: ")
_PROBE_LEADS = ("Do you remember? ", "", "Quick check: ")

# dialogue topic -> arithmetic tasks whose questions fit it
DIALOGUE_TOPICS: dict[str, tuple[str, ...]] = {
    "shopping": ("money",), "school": ("sum", "difference", "product", "quotient"),
    "travel": ("rates", "time"), "hobbies": ("quantities", "sharing"), "planning": ("multi_step", "time", "money"),
}


def _question(r: random.Random, topic: str, max_level: int) -> tuple[str, str]:
    tasks = DIALOGUE_TOPICS[topic]
    choices = [(t, lv) for t in TEMPLATES if t.task in tasks for lv in t.levels if lv <= max_level]
    template, level = r.choice(choices)
    p = template.make(r, level)
    return p.question, str(p.answer)


def _dialogue(r: random.Random, n_sessions: int, facts_per_session: int, questions_per_session: int,
              max_level: int, update_prob: float) -> dict[str, Any]:
    topic = r.choice(sorted(DIALOGUE_TOPICS))
    facts: dict[str, list[tuple[str, int]]] = {}  # slot -> [(value, session)], latest last
    sessions: list[list[dict[str, Any]]] = []
    for s in range(n_sessions):
        steps: list[dict[str, Any]] = []
        stated_before = [slot for slot, hist in facts.items() if hist[-1][1] < s]
        # Probes: facts whose latest statement is in an earlier session.
        for slot in r.sample(stated_before, min(len(stated_before), r.randint(1, 2))) if stated_before else []:
            value, fact_session = facts[slot][-1]
            old = sorted({v for v, _ in facts[slot][:-1]} - {value})
            steps.append({"kind": "probe", "prompt": r.choice(_PROBE_LEADS) + FACT_SLOTS[slot][2], "answer": value,
                          "slot": slot, "distractors": old, "fact_session": fact_session})
        # Updates change a fact stated in an earlier session; probes later must use the new value.
        for slot in stated_before:
            if r.random() < update_prob:
                value = r.choice([v for v in FACT_SLOTS[slot][3] if v != facts[slot][-1][0]])
                facts[slot].append((value, s))
                steps.append({"kind": "update", "prompt": FACT_SLOTS[slot][1].format(v=value), "answer": None,
                              "slot": slot, "value": value, "distractors": sorted({v for v, _ in facts[slot][:-1]})})
        new_slots = [slot for slot in FACT_SLOTS if slot not in facts]
        for slot in r.sample(new_slots, min(len(new_slots), facts_per_session)):
            value = r.choice(FACT_SLOTS[slot][3])
            facts[slot] = [(value, s)]
            statement = FACT_SLOTS[slot][0].format(v=value)
            lead = r.choice(_LEADS)
            if lead and not statement.startswith("I "):  # "By the way, my dog ..." but keep "I"
                statement = statement[0].lower() + statement[1:]
            steps.append({"kind": "fact", "prompt": lead + statement, "answer": None, "slot": slot, "value": value})
        for _ in range(questions_per_session):
            q, a = _question(r, topic, max_level)
            steps.append({"kind": "question", "prompt": r.choice(_Q_LEADS) + q, "answer": a})
        # Probes keep their place at the start (the user checks memory first), the rest is shuffled.
        head = [st for st in steps if st["kind"] == "probe"]
        tail = [st for st in steps if st["kind"] != "probe"]
        r.shuffle(tail)
        sessions.append(head + tail)
    return {"topic": topic, "sessions": sessions, "facts": {k: v[-1][0] for k, v in facts.items()}}


def generate_dialogues(n: int, *, split: str = "train", seed: int = 0, sessions: int = 3, facts_per_session: int = 2,
                       questions_per_session: int = 2, max_level: int = 2, update_prob: float = 0.25,
                       test_fraction: float = 0.2) -> list[Record]:
    """`n` distinct dialogues of `split`; the split hashes the dialogue's full content."""
    if split not in ("train", "test"):
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    if sessions < 1 or facts_per_session < 0 or questions_per_session < 0:
        raise ConfigError("dialogues: sessions >= 1, facts_per_session >= 0 and questions_per_session >= 0 required")
    if sessions > 1 and facts_per_session == 0:
        raise ConfigError("dialogues: facts_per_session must be > 0 for later sessions to have probes")
    if not 1 <= max_level <= 4:
        raise ConfigError(f"dialogues: max_level must be in 1..4, got {max_level}")
    rng = random.Random(int(stable_hash("dialogues", seed, split)[:16], 16))
    records: list[Record] = []
    seen: set[str] = set()
    for _ in range(50 * n + 200):
        if len(records) >= n:
            break
        d = _dialogue(rng, sessions, facts_per_session, questions_per_session, max_level, update_prob)
        canonical = json.dumps(d, sort_keys=True)
        if split_of(canonical, test_fraction) != split or canonical in seen:
            continue
        seen.add(canonical)
        did = "dlg-" + stable_hash(canonical)[:16]
        for s, steps in enumerate(d["sessions"]):
            for t, step in enumerate(steps):
                step.update(id=f"{did}/s{s}/t{t}", topic=d["topic"], session=s)
        first = next(st for ss in d["sessions"] for st in ss)
        records.append({"id": did, "prompt": first["prompt"], "topic": d["topic"], "task": "dialogue",
                        "sessions": d["sessions"], "facts": d["facts"],
                        "probes": [st for ss in d["sessions"] for st in ss if st["kind"] == "probe"]})
    if len(records) < n:
        raise ConfigError(f"dialogues: only {len(records)} distinct {split} dialogues generated; ask for fewer")
    return records


@register_source("dialogues", keys=("split", "n", "seed", "sessions", "facts_per_session", "questions_per_session",
                                    "max_level", "update_prob", "test_fraction"))
def dialogues_source(spec: Mapping[str, Any]) -> Source:
    """``{"type": "dialogues", "split": "test", "n": 50, "sessions": 3}``."""
    split = spec.get("split", "train")
    kwargs = {k: spec[k] for k in ("sessions", "facts_per_session", "questions_per_session", "max_level")
              if k in spec}
    records = generate_dialogues(int(spec.get("n", 200)), split=split, seed=int(spec.get("seed", 0)),
                                 update_prob=float(spec.get("update_prob", 0.25)),
                                 test_fraction=float(spec.get("test_fraction", 0.2)),
                                 **{k: int(v) for k, v in kwargs.items()})
    return Source.from_records(f"dialogues ({split})", records)
