"""Format-constraint checkers, including strings built to fool them."""

import pytest

from jaxevo.data.constraints import (
    CONSTRAINT_CHECKERS,
    check_constraint,
    check_constraints,
    constraint_score,
    count_bullets,
    count_sentences,
    count_words,
)
from jaxevo.data.instructions import CONSTRAINT_TYPES, describe_constraint
from jaxevo.errors import ConfigError


def test_counters():
    assert count_words("Hello, world! It's a well-known fact.") == 6
    assert count_words("   ") == 0
    assert count_sentences("One. Two! Three?") == 3
    assert count_sentences("Wait... really?! Yes.") == 3
    assert count_sentences("No final punctuation") == 1
    assert count_sentences("3.5 is a number. So is 2.") == 2  # a decimal point ends no sentence
    assert count_bullets("- a\n* b\n\u2022 c\n1. d\n2) e\n-not a bullet\n") == 5


@pytest.mark.parametrize("constraint, good, bad", [
    ({"type": "word_count", "max": 5}, "one two three", "one two three four five six"),
    ({"type": "word_count", "min": 3, "max": 4}, "a b c", "a b"),
    ({"type": "sentence_count", "max": 2}, "One. Two.", "One. Two. Three."),
    ({"type": "bullet_count", "exact": 3}, "Intro:\n- a\n- b\n- c", "- a\n- b\n- c\n- d"),
    ({"type": "paragraph_count", "exact": 2}, "Para one.\n\nPara two.", "Only one paragraph.\nSame one."),
    ({"type": "keywords", "words": ["oven", "salt"]}, "Heat the OVEN, add salt.", "Heat the ovens, add salt."),
    ({"type": "forbidden_words", "words": ["very"]}, "Every day is everything.", "It is Very good."),
    ({"type": "json", "keys": ["title"]}, '{"title": "x", "body": 1}', '{"body": 1}'),
    ({"type": "json"}, '```json\n{"a": 1}\n```', 'Here is JSON: {"a": 1}'),
    ({"type": "lowercase"}, "all lower case, 123!", "Not all lower"),
    ({"type": "no_commas"}, "No commas here.", "One, two"),
    ({"type": "ends_with", "text": "That is all."}, "Text. That is all.  \n", "That is all. More text."),
    ({"type": "starts_with", "text": "Sure."}, "  Sure. Here it is.", "Well, Sure."),
])
def test_each_checker(constraint, good, bad):
    assert check_constraint(good, constraint)
    assert not check_constraint(bad, constraint)


def test_json_adversarial():
    c = {"type": "json", "keys": ["answer"]}
    assert not check_constraint('["answer"]', c)  # a list is not an object
    assert not check_constraint('{"answer": 1} trailing', c)
    assert not check_constraint("{'answer': 1}", c)  # Python repr, not JSON
    assert not check_constraint('"{\\"answer\\": 1}"', c)  # a JSON string holding an object
    assert check_constraint('  {"answer": null}  ', c)


def test_empty_response_satisfies_nothing():
    for kind in ("lowercase", "no_commas", "forbidden_words"):
        c = {"type": kind, "words": ["x"]}
        assert not check_constraint("", c)
        assert not check_constraint("   ", c)
        assert not check_constraint(None, c)
    assert constraint_score("", []) == 0.0
    assert constraint_score("hi", []) == 1.0


def test_results_and_score():
    cs = [{"type": "lowercase"}, {"type": "word_count", "max": 3}, {"type": "no_commas"}]
    assert check_constraints("hello there friend, hi", cs) == [True, False, False]
    assert constraint_score("hello there friend, hi", cs) == pytest.approx(1 / 3)


def test_errors():
    with pytest.raises(ConfigError, match="unknown constraint type 'shout'"):
        check_constraint("x", {"type": "shout"})
    with pytest.raises(ConfigError, match="exact"):
        check_constraint("x", {"type": "bullet_count"})


def test_every_generated_type_has_checker_and_description():
    assert set(CONSTRAINT_TYPES) <= set(CONSTRAINT_CHECKERS)
    assert "3 bullet points" in describe_constraint({"type": "bullet_count", "exact": 3})
    assert describe_constraint({"type": "word_count", "min": 2, "max": 2}) == "Use exactly 2 words."
    assert describe_constraint({"type": "keywords", "words": ["a", "b", "c"]}) == "Include the words 'a', 'b' and 'c'."
