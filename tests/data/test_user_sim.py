"""The simulated user: reactions and Censor signals as a deterministic function of answer quality."""

import random
import statistics

import pytest

from jaxevo.data.dialogues import generate_dialogues
from jaxevo.data.user_sim import VERBOSE_WORDS, answer_quality, simulate_user_reaction

QUESTION = {"id": "d/s0/t0", "kind": "question", "prompt": "Tom has 12 apples and buys 35 more. How many apples?",
            "answer": "47"}
PROBE = {"id": "d/s1/t0", "kind": "probe", "prompt": "What is my dog's name?", "answer": "Rex",
         "distractors": ["Max"]}
FACT = {"id": "d/s0/t1", "kind": "update", "prompt": "We renamed our dog: he is called Rex now.", "answer": None,
        "value": "Rex", "distractors": ["Max"]}
SIGNALS = {"explicit", "sentiment", "continuation", "rephrase", "correction", "engagement"}


@pytest.mark.parametrize("item, answer, quality", [
    (QUESTION, "12 + 35 = 47. The answer is 47.", "correct"),
    (QUESTION, "You will have 47 apples.", "correct"),  # a user reads plain replies too
    (QUESTION, "The answer is 47. " + "blah " * VERBOSE_WORDS, "verbose"),
    (QUESTION, "Tom has 12 apples and buys 35 more.", "wrong"),  # copies the question's numbers
    (QUESTION, "The answer is 46.", "wrong"),
    (QUESTION, "", "empty"),
    (QUESTION, None, "empty"),
    (PROBE, "Your dog is called Rex.", "correct"),
    (PROBE, "Rex or Max, I think.", "wrong"),  # hedging with the outdated name
    (PROBE, "I don't know.", "wrong"),
    (FACT, "Got it, Rex it is.", "ack"),
    (FACT, "Noted!", "ack"),
    (FACT, "Nice, say hi to Max for me.", "no_ack"),  # names only the outdated value
    (FACT, "   ", "empty"),
])
def test_quality_classes(item, answer, quality):
    assert answer_quality(item, answer)[0] == quality


def test_reaction_shape_and_ranges():
    for item in (QUESTION, PROBE, FACT):
        for answer in ("", "The answer is 47.", "Rex", "no idea", "x " * 300):
            for seed in range(5):
                out = simulate_user_reaction(item, answer, seed)
                assert set(out["signals"]) == SIGNALS
                assert all(0.0 <= v <= 1.0 for v in out["signals"].values())
                assert 1 <= out["rating"] <= 5 and isinstance(out["text"], str) and out["text"]
                assert out["abandon"] == (out["signals"]["continuation"] == 0.0)


def test_deterministic_given_seed():
    for seed in range(10):
        assert simulate_user_reaction(QUESTION, "The answer is 40.", seed) == \
            simulate_user_reaction(QUESTION, "The answer is 40.", seed)
        a = simulate_user_reaction(QUESTION, "no", random.Random(seed))
        assert a == simulate_user_reaction(QUESTION, "no", random.Random(seed))
    # No rng: a pure function of the inputs.
    assert simulate_user_reaction(PROBE, "Max", None) == simulate_user_reaction(PROBE, "Max", None)
    # Seeds vary the wording/kind within a quality class, not the class.
    kinds = {simulate_user_reaction(QUESTION, "The answer is 40.", s)["kind"] for s in range(40)}
    assert len(kinds) > 1 and kinds <= {"correction", "rephrase", "complaint", "abandon"}


def test_reactions_follow_quality():
    good = [simulate_user_reaction(QUESTION, "The answer is 47.", s) for s in range(50)]
    bad = [simulate_user_reaction(QUESTION, "The answer is 12.", s) for s in range(50)]
    assert all(r["rating"] >= 4 and r["kind"] in ("praise", "thanks") for r in good)
    assert all(r["rating"] <= 2 for r in bad)
    mean = lambda rs, key: statistics.mean(r["signals"][key] for r in rs)  # noqa: E731
    for key in ("explicit", "sentiment", "engagement", "correction", "continuation"):
        assert mean(good, key) > mean(bad, key), key
    corrections = [r for r in bad if r["kind"] == "correction"]
    assert corrections and all("47" in r["text"] and r["signals"]["correction"] == 0.0 for r in corrections)
    rephrases = [r for r in bad if r["kind"] == "rephrase"]
    assert rephrases and all(QUESTION["prompt"] in r["text"] and r["signals"]["rephrase"] < 0.5 for r in rephrases)
    abandons = [r for r in bad if r["kind"] == "abandon"]
    assert abandons and all(r["signals"]["continuation"] == 0.0 for r in abandons)
    assert mean(good, "rephrase") > 0.8


def test_plays_a_generated_dialogue():
    d = generate_dialogues(1, seed=5)[0]
    rng = random.Random(0)
    for steps in d["sessions"]:
        for step in steps:
            gold = step["answer"] if step["answer"] is not None else step.get("value", "")
            perfect = simulate_user_reaction(step, f"Sure. The answer is {gold}.", rng)
            assert perfect["quality"] in ("correct", "ack") and perfect["rating"] >= 4
            assert simulate_user_reaction(step, "", rng)["quality"] == "empty"
