"""Answer extraction, normalisation and probe checking on adversarial strings."""

import pytest

from jaxevo.data.answers import (
    answers_match,
    check_probe,
    extract_answer,
    follows_format,
    is_well_formatted,
    normalize_answer,
    normalize_number,
)
from jaxevo.data.prompts import DEFAULT_ARITHMETIC_TEMPLATE, format_prompt, solution_to_response
from jaxevo.errors import ConfigError


@pytest.mark.parametrize("text, expected", [
    ("Step 1: 3 + 4 = 7. The answer is 7.", "7"),
    ("The answer is 1,000.", "1000"),
    ("The answer is $5.00.", "5"),
    ("The answer is 3.50 dollars", "3.5"),
    ("The answer is -3", "-3"),
    ("the answer is \u22127", "-7"),  # unicode minus
    ("The final answer is: **42** apples.", "42"),
    ("The answer is __42__", "42"),
    ("The answer is 50%.", "50"),
    ("The answer is .5", "0.5"),
    ("Natalia sold 48 + 24 = 72 clips.\n#### 72", "72"),
    ("####1,234", "1234"),
    ("\\boxed{-3}", "-3"),
    ("So we get $\\boxed{1,234}$.", "1234"),
    ("\\boxed{\\$5}", "5"),
    ("\\boxed{12\\text{ apples}}", "12"),
    ("Answer: 7", "7"),
    ("Final answer: -12", "-12"),
    ("The answer: 9.", "9"),
    # What follows the number is no expression: a unit, words, a new line, a reason.
    ("The answer is 27 crayons in total.", "27"),
    ("The answer is 12 times as many.", "12"),
    ("The answer is 7 - that is all.", "7"),
    ("The answer is 9, since 4 + 5 = 9.", "9"),
    ("The answer is 10 (5 + 5).", "10"),
    ("The answer is 15.\n\n1 + 2 = 3", "15"),
])
def test_strict_formats(text, expected):
    assert extract_answer(text) == expected
    assert is_well_formatted(text)


@pytest.mark.parametrize("text", [
    None, "", "I don't know.",
    # Cut off before the final line: the numbers are copied from the question. The last-number
    # fallback would return 35 here, which is the trap DESIGN.md describes.
    "Tom has 12 apples and buys 35 more, so",
    "The answer is twelve.",
    "The answer is 12 or 13.",  # hedge
    "The answer is 5 - 3 = 2",  # an expression, not a number
    # Read as their first number before (42, 25, 25, 2): the first three a 135M model wrote in a
    # SELF meta round, the fourth in a GRPO evaluation.
    "The answer is 42 + 1 = 43.\nThe answer is 43.",  # the first marker's number starts a sum
    "So the answer is 25 + 1 = N.",
    "Final answer: 25 plants / 5 plants = 5",  # a unit word between number and operator
    "The answer is 2 * 6 = 12.",
    "The answer is 6 x 7 = 42",
    "The answer is 3 times 4.",
    "\\boxed{\\frac{1}{2}}",  # not an integer/decimal
    "\\boxed{}",
    "My answer follows: x",
    "answered 5 times",  # 'answer' inside a word is no marker
])
def test_no_strict_answer_is_none(text):
    assert extract_answer(text) is None
    assert not is_well_formatted(text)


def test_fallback_only_when_asked():
    cut = "Tom has 12 apples and buys 35 more, so"
    assert extract_answer(cut) is None
    assert extract_answer(cut, fallback=True) == "35"
    assert extract_answer("so 10-3 gives", fallback=True) == "3"  # a hyphen between numbers is no sign
    assert extract_answer("values 1,2,3", fallback=True) == "3"  # a list, not a thousands number
    assert extract_answer("total: -4 degrees", fallback=True) == "-4"
    assert extract_answer("no numbers", fallback=True) is None
    # A strict answer wins over the fallback even when more numbers follow it.
    assert extract_answer("The answer is 7. Check: 3 + 4 = 7, then 99", fallback=True) == "7"


def test_self_correction_and_rambling():
    # An unmarked "Wait, 13" is not an answer in the required format: the marked 12 counts.
    assert extract_answer("The answer is 12. Wait, 13") == "12"
    assert extract_answer("The answer is 12. Wait, 13", fallback=True) == "12"
    corrected = "The answer is 12. Wait, the answer is 13."
    assert extract_answer(corrected) == "12"  # first: small models ramble into new problems
    assert extract_answer(corrected, which="last") == "13"
    rambling = "3 + 4 = 7. The answer is 7.\n\nQuestion: What is 5 + 5?\nThe answer is 10."
    assert extract_answer(rambling) == "7"
    with pytest.raises(ValueError):
        extract_answer("The answer is 1", which="middle")


def test_question_numbers_copied_into_answer():
    question = "Sara has 15 pens and buys 27 more. How many pens does she have?"
    completion = question + " Sara has 15 pens. She buys 27 more pens. So she has"
    assert extract_answer(completion) is None
    completion += " 42 pens. The answer is 42."
    assert extract_answer(completion) == "42"


@pytest.mark.parametrize("raw, canon", [
    ("1,234", "1234"), ("$5.00", "5"), ("3.50", "3.5"), ("-0", "0"), ("+7", "7"), ("-$5", "-5"),
    ("$-5", "-5"), ("12.", "12"), ("0.250", "0.25"), ("007", "7"), (" 42 ", "42"),
    ("1,2", None), ("abc", None), ("", None), ("3/4", None), ("1e5", None),
])
def test_normalize_number(raw, canon):
    assert normalize_number(raw) == canon


def test_answers_match():
    assert answers_match("3.50", "3.5")
    assert answers_match("$1,000", 1000)
    assert answers_match("1000.0", "1000")
    assert answers_match(-3, "-3")
    assert answers_match("Rex.", "rex")
    assert not answers_match(None, "3")
    assert not answers_match("3", None)
    assert not answers_match("13", "3")
    assert not answers_match("-3", "3")
    assert not answers_match(True, "1")  # a boolean is not the number 1
    assert normalize_answer(2.0) == "2"


def test_check_probe():
    assert check_probe("Your dog is called Rex.", "Rex")
    assert check_probe("your dog's name is rex!", "Rex")
    assert not check_probe("Your dog is called Rexford.", "Rex")
    assert not check_probe("It is either Rex or Max.", "Rex", distractors=["Max"])
    assert check_probe("It used to be Max; now it is Rex.", "Rex") is True
    assert not check_probe("", "Rex")
    assert not check_probe(None, "Rex")
    assert check_probe("You have 3 children.", "3")
    assert not check_probe("You have 13 children.", "3")
    assert not check_probe("You have 3 children, or maybe 2.", "3", distractors=["2"])
    assert check_probe("You have 3.0 children.", "3")


def test_prompt_template_and_targets():
    prompt = format_prompt("What is 2 + 2?")
    assert prompt == DEFAULT_ARITHMETIC_TEMPLATE.replace("{question}", "What is 2 + 2?")
    assert prompt.startswith("What is 2 + 2?\n") and "The answer is N" in prompt
    # Only {question} is substituted: JSON braces in a template survive.
    assert format_prompt("Q", 'Return {"a": 1}. {question}') == 'Return {"a": 1}. Q'
    with pytest.raises(ConfigError, match="question"):
        format_prompt("Q", "no slot here")
    response = solution_to_response("3 + 4 = 7.\n#### 7")
    assert response == "3 + 4 = 7.\nThe answer is 7."
    assert extract_answer(response) == "7"
    assert solution_to_response("#### 7") == "The answer is 7."
    assert solution_to_response("no final line") == "no final line"


@pytest.mark.parametrize("text,ok", [
    ("Your dog is called Rex.", True),
    ("Rex", True),
    ("You told me your dog is Rex! ", True),
    ("Your dog is called Rex. He is a good dog.", False),  # two sentences
    (" ".join(["word"] * 26), False),  # too long for "one short sentence"
    ("", False), (None, False),
])
def test_probe_format_is_one_short_sentence(text, ok):
    assert follows_format(text, {"kind": "probe", "answer": "Rex"}) is ok
    # Any other item asks for the strict final-answer format.
    assert follows_format(text, {"kind": "question", "answer": "3"}) is False
    assert follows_format("The answer is 3.", {"kind": "question"}) and follows_format("The answer is 3.")
