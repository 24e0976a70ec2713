"""The held-out phrasings of the arithmetic task: every seen template has one, each states the
right answer with true worked steps, its wording shares little with every seen template of its
task, and the source never trains on them (nor draws them on the seen path)."""

import hashlib
import json
import random
import re

import pytest

from jaxevo.commands.eval import TASKS as EVAL_TASKS
from jaxevo.data import load_source
from jaxevo.data import arithmetic as arith_mod
from jaxevo.data.arithmetic import generate_arithmetic
from jaxevo.data.arithmetic_phrasings import (ALTERNATIVES, NEW_CONTAINERS, NEW_ITEMS, NEW_PRICED, NEW_VEHICLES,
                                              UNSEEN_TEMPLATES)
from jaxevo.data.arithmetic_templates import CONTAINERS, ITEMS, NAMES, PRICED, TEMPLATES, VEHICLES
from jaxevo.errors import ConfigError
from jaxevo.evolve.self_instruct import rouge_l

_EQ = re.compile(r"((?:\d+ [-+*/] )+\d+) = (\d+)")
SEEN = {t.name: t for t in TEMPLATES}
UNSEEN = {t.name: t for t in UNSEEN_TEMPLATES}


def _draws(template, level, n=40, seed=0):
    rng = random.Random(seed)
    return [template.make(rng, level) for _ in range(n)]


def test_every_seen_template_has_a_held_out_one_of_its_task_and_levels():
    assert set(ALTERNATIVES) == set(SEEN)
    assert sorted(n for alts in ALTERNATIVES.values() for n in alts) == sorted(UNSEEN)
    assert not set(UNSEEN) & set(SEEN)
    for seen, alts in ALTERNATIVES.items():
        assert alts
        for name in alts:
            assert name.startswith("unseen_")
            assert (UNSEEN[name].task, UNSEEN[name].levels) == (SEEN[seen].task, SEEN[seen].levels)


@pytest.mark.parametrize("name", sorted(UNSEEN))
def test_held_out_answers_equal_their_true_steps(name):
    t = UNSEEN[name]
    for level in t.levels:
        for p in _draws(t, level):
            assert isinstance(p.answer, int) and p.answer >= 0
            eqs = _EQ.findall("\n".join(p.steps))
            assert eqs, p.steps
            for lhs, rhs in eqs:  # every step is true arithmetic
                assert eval(lhs) == int(rhs), (p.steps, lhs)  # noqa: S307 - digits and operators only
            assert int(eqs[-1][1]) == p.answer
            assert _EQ.search(p.steps[-1]) and p.steps[-1].count("=") == 1  # the last step states it
            q_numbers = [int(x) for x in re.findall(r"\d+", p.question)]
            assert set(p.numbers) <= set(q_numbers) | {p.answer}, (p.question, p.numbers)


def test_held_out_answers_recomputed_by_hand():
    # answer from the drawn numbers, written out per template (independent of the steps)
    by_hand = {
        "unseen_add_words": lambda n, lv: n[0] + n[1],
        "unseen_subtract_words": lambda n, lv: n[0] - n[1],
        "unseen_divide_words": lambda n, lv: n[0] // n[1],
        "unseen_chain_words": lambda n, lv: (n[0] + n[1]) * n[2] - (n[3] if lv == 4 else 0),
        "unseen_shelf_taken": lambda n, lv: n[0] - n[1],
        "unseen_keep_half": lambda n, lv: n[0] // 2 + n[1],
        "unseen_library": lambda n, lv: n[0] * n[1] - n[2] + n[3],
        "unseen_change_note": lambda n, lv: n[2] - n[0] * n[1] if lv == 3 else n[3] - n[0] * n[1] - n[2],
        "unseen_piggy_bank": lambda n, lv: n[0] * n[1] - n[2] if lv == 3 else n[0] * n[1] + n[2] - n[3],
        "unseen_pages_pace": lambda n, lv: n[1] if lv == 2 else (n[0] - n[1]) // n[2],
        "unseen_open_hours": lambda n, lv: n[2] * 60 + n[3] - n[0] * 60 - n[1],
        "unseen_born_before": lambda n, lv: sum(n),
        "unseen_miles_per_hour": lambda n, lv: n[0] * n[1] + (n[2] * n[3] if lv == 3 else 0),
    }
    for name, f in by_hand.items():
        t = UNSEEN[name]
        for level in t.levels:
            for p in _draws(t, level, seed=1):
                assert p.answer == f(p.numbers, level), (name, p.question)
    p = UNSEEN["unseen_open_hours"].make(random.Random(3), 3)
    h1, m1, h2, m2 = p.numbers
    assert f"{h1}:{m1:02d}" in p.question and f"{h2}:{m2:02d}" in p.question


# Names, items, containers, priced things and vehicles of both modules: the skeleton keeps wording.
_WORDS = sorted({w for n, _ in NAMES for w in (n,)} | {"Sam", "a friend", "a neighbour"} | set(ITEMS) | set(NEW_ITEMS)
                | set(CONTAINERS) | {c for pair in NEW_CONTAINERS for c in pair} | set(VEHICLES) | set(NEW_VEHICLES)
                | {w for pair in PRICED + NEW_PRICED for w in pair}, key=len, reverse=True)
_WORD_RE = re.compile(r"\b(" + "|".join(map(re.escape, _WORDS)) + r")\b")


def skeleton(question: str) -> str:
    return _WORD_RE.sub("X", re.sub(r"\d+", "N", question))


def _skeletons(templates, task):
    return {skeleton(p.question) for t in templates if t.task == task for lv in t.levels for p in _draws(t, lv, 30)}


@pytest.mark.parametrize("task", sorted({t.task for t in TEMPLATES}))
def test_held_out_wording_differs_from_every_seen_template(task):
    seen, unseen = _skeletons(TEMPLATES, task), _skeletons(UNSEEN_TEMPLATES, task)
    assert seen and unseen and not seen & unseen
    worst = max((rouge_l(u, s), u, s) for u in unseen for s in seen)
    assert worst[0] < 0.7, worst


def test_skeleton_hides_numbers_and_names():
    assert skeleton("Tom has 12 apples. Then he gets 3 more apples.") == "X has N X. Then he gets N more X."
    assert skeleton("One toy car costs $4.") == "One X costs $N."


def test_unseen_source_draws_only_held_out_templates_and_never_for_training():
    recs = load_source({"type": "arithmetic", "split": "test", "phrasings": "unseen", "n": 150,
                        "levels": [1, 2]}).to_list()
    assert len(recs) == 150 == len({r["id"] for r in recs})
    assert {r["template"] for r in recs} == {t.name for t in UNSEEN_TEMPLATES if {1, 2} & set(t.levels)}
    assert {r["level"] for r in recs} == {1, 2}
    for r in recs:
        assert r["solution"].endswith(f"\n#### {r['answer']}") and r["task"] == UNSEEN[r["template"]].task
    assert recs == generate_arithmetic(150, split="test", phrasings="unseen", levels=[1, 2])  # deterministic
    for split in ("train", None):
        spec = {"type": "arithmetic", "phrasings": "unseen", "n": 5, **({"split": split} if split else {})}
        with pytest.raises(ConfigError, match=r"phrasings=unseen is only for split: test; its templates are held "
                                              r"out of training"):
            load_source(spec)
    with pytest.raises(ConfigError, match="phrasings must be one of"):
        generate_arithmetic(5, split="test", phrasings="novel")


def test_unseen_level1_is_one_digit_one_step():
    for r in generate_arithmetic(100, split="test", phrasings="unseen", levels=[1]):
        numbers = [int(x) for x in re.findall(r"\d+", r["question"])]
        if r["task"] in ("sharing", "quotient"):  # k * q shared among k: the total is a one-digit product
            assert int(r["answer"]) < 10
            numbers = numbers[1:]
        assert all(n < 10 for n in numbers), r["question"]
        assert r["solution"].count("\n") == 1


def test_seen_path_is_unchanged_and_never_draws_held_out_templates(monkeypatch):
    # sha256 of these record lists computed with the code before the held-out templates existed
    before = {"test": "c14778b75f7640688fa180bdf4c15a89810ea748375089eb6f96378021e9c299",
              "train": "77e1fddf93a02b9e93816611ec5c6595141ee770dd6e1c1d03e111738db5521a"}

    def digest(records):
        return hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()

    def refuse(r, level):
        raise AssertionError("a held-out template was drawn on the seen path")
    monkeypatch.setattr(arith_mod, "UNSEEN_TEMPLATES", tuple(t.__class__(t.name, t.task, t.levels, refuse)
                                                             for t in UNSEEN_TEMPLATES))
    assert digest(generate_arithmetic(50, split="test")) == before["test"]
    assert digest(generate_arithmetic(50, split="train", levels=[1, 2])) == before["train"]
    assert digest(load_source({"type": "arithmetic", "split": "test", "n": 50, "phrasings": "seen"}).to_list()) \
        == before["test"]
    assert all(not r["template"].startswith("unseen_") for r in generate_arithmetic(400, split="train"))


def test_eval_task_arithmetic_unseen():
    spec = EVAL_TASKS["arithmetic-unseen"]
    assert spec["levels"] == EVAL_TASKS["arithmetic"]["levels"] and spec["split"] == "test"
    recs = load_source(dict(spec, n=20)).to_list()
    assert all(r["template"] in UNSEEN for r in recs)
