"""The `choice` checker on how models answer multiple choice, and how data sets store the gold."""

from __future__ import annotations

import pytest

from jaxevo.checkers import get_checker
from jaxevo.checkers.choice import gold_letter
from jaxevo.errors import ConfigError

CHOICE = get_checker("choice")
REC = {"id": "q1", "question": "Capital of the UK?", "choices": ["Paris", "London", "Rome", "Berlin"],
       "answer": "B"}


@pytest.mark.parametrize("completion", [
    "The answer is (B)", "The answer is B.", "B.", "B", "(B) London", "B) London", "Answer: b",
    "answer: (b)", "**B**", "The correct answer is **B**", "\\boxed{B}", "\\boxed{\\text{B}}",
    "The answer is London.", "The answer is B because London is the capital.",
    "Final answer: B", "Let me think. London is the capital.\nThe answer is (B).",
])
def test_usual_phrasings_of_b(completion):
    assert CHOICE.extract(completion, REC) == "B"
    assert CHOICE.check(completion, REC) == 1.0
    assert CHOICE.well_formatted(completion, REC)


@pytest.mark.parametrize("completion", [
    "The answer is A or B", "The answer is (A) or (B)", "Answer: B/C", "A and B", "B or C",
    "The answer is B, C", "Either A or B", "(B) or (D)", "The answer is b or c.",
])
def test_hedges_naming_two_letters_score_zero(completion):
    assert CHOICE.extract(completion, REC) is None
    assert CHOICE.check(completion, REC) == 0.0
    assert not CHOICE.well_formatted(completion, REC)


@pytest.mark.parametrize("completion", [
    "A car would take too long.",     # an article, not option A
    "The answer is a bit unclear.",   # the same after a marker
    "The answer is E",                # not among four options
    "I think London",                 # no marker, no opening letter
    "", None,
])
def test_not_an_answer(completion):
    assert CHOICE.extract(completion, REC) is None
    assert CHOICE.check(completion, REC) == 0.0


def test_wrong_letter_is_formatted_but_wrong():
    assert CHOICE.check("The answer is (C)", REC) == 0.0
    assert CHOICE.well_formatted("The answer is (C)", REC)


def test_gold_as_letter_index_or_text():
    assert gold_letter(dict(REC, answer="b")) == "B"
    assert gold_letter(dict(REC, answer=1)) == "B"          # MMLU: a 0-based int
    assert gold_letter(dict(REC, answer="1")) == "B"        # the same after JSONL mapping
    assert gold_letter(dict(REC, answer="London")) == "B"   # the option's text
    assert gold_letter(dict(REC, answer="(D)")) == "D"
    with pytest.raises(ConfigError, match="q1.*'Madrid'.*letter A-D"):
        gold_letter(dict(REC, answer="Madrid"))
    with pytest.raises(ConfigError, match="choices"):
        CHOICE.check("B", {"id": "q2", "answer": "B", "choices": "not a list"})
    assert CHOICE.needs == ("answer", "choices")


def test_a_following_article_is_no_hedge():
    assert CHOICE.extract("The answer is B, a city on the Thames.", REC) == "B"
    assert CHOICE.extract("The answer is B or, frankly, C.", REC) is None
    assert CHOICE.extract("The answer is B or maybe (D).", REC) is None
    assert CHOICE.extract("The answer is B and I am sure of it.", REC) == "B"  # I is no option of four
