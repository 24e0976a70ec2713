"""The `math` checker against math-verify called directly, on the habits of MATH-style answers:
``\\frac{1}{2}`` = ``0.5`` = ``1/2``, nested ``\\boxed{}``, ``\\text{ cm}``, ``\\dfrac``, intervals."""

from __future__ import annotations

import pytest
from math_verify import LatexExtractionConfig, parse, verify

from jaxevo.checkers import get_checker
from jaxevo.errors import ConfigError

MATH = get_checker("math")


def reference(completion_latex: str, gold: str) -> bool:
    """math-verify on its own: gold and the boxed answer, each parsed from a box."""
    cfg = [LatexExtractionConfig(boxed_match_priority=0)]
    return verify(parse("\\boxed{" + gold + "}", extraction_config=cfg),
                  parse("\\boxed{" + completion_latex + "}", extraction_config=cfg))


SAME = [  # (stated answer, gold)
    ("\\frac{1}{2}", "0.5"), ("0.5", "\\frac{1}{2}"), ("1/2", "\\frac{1}{2}"), ("\\dfrac{1}{2}", "1/2"),
    ("\\frac12", "0.5"), ("\\frac{2}{4}", "\\frac{1}{2}"), ("5\\text{ cm}", "5"), ("5 \\text{cm}", "5"),
    ("1+x^2", "x^2+1"), ("(1, 2]", "(1,2]"), ("\\sqrt{2}", "\\sqrt2"), ("2\\pi", "2 \\pi"),
    ("10\\%", "10\\%"), ("-3", "-3"),
]
DIFFERENT = [("\\frac{1}{3}", "0.5"), ("[1, 2]", "(1,2]"), ("x^2-1", "x^2+1"), ("6", "5")]


@pytest.mark.parametrize("stated,gold", SAME + DIFFERENT)
def test_agrees_with_math_verify(stated, gold):
    completion = f"We simplify step by step. So the result is \\boxed{{{stated}}}."
    expected = reference(stated, gold)
    assert expected == ((stated, gold) in SAME)  # the reference itself says what we expect
    assert MATH.check(completion, {"answer": gold}) == float(expected)


@pytest.mark.parametrize("completion", [
    "\\boxed{\\frac{1}{2}}",
    "The answer is $\\frac{1}{2}$.",
    "The final answer is 0.5",
    "Answer: 1/2",
    "So $x = \\boxed{\\boxed{\\frac{1}{2}}}$ and we are done.",   # a box in a box
    "**The answer is \\(\\frac{1}{2}\\)**",
    "#### 0.5",
    "The final answer is $\\boxed{\\dfrac{1}{2}}$. I hope it is correct.",
])
def test_writings_of_one_half(completion):
    assert MATH.check(completion, {"answer": "\\frac{1}{2}"}) == 1.0
    assert MATH.well_formatted(completion, {})
    assert MATH.extract(completion, {}) == "1/2"  # one canonical string: votes agree


def test_nested_braces_and_units():
    assert MATH.check("\\boxed{\\frac{\\sqrt{3}}{2}}", {"answer": "\\frac{\\sqrt3}{2}"}) == 1.0
    assert MATH.check("The length is \\boxed{12\\text{ cm}}.", {"answer": "12"}) == 1.0
    assert MATH.check("\\boxed{12\\text{ cm}}", {"answer": "12\\text{ cm}"}) == 1.0
    # A gold that is a whole MATH solution: its box is the answer.
    assert MATH.check("\\boxed{3}", {"answer": "Adding, $1+2=\\boxed{3}$."}) == 1.0


@pytest.mark.parametrize("completion", [
    "I have 3 apples and 5 pears",           # no stated answer: no last-number fallback
    "\\boxed{\\frac{1}{2}",                  # cut off inside the box
    "\\boxed{5} or \\boxed{6}",              # a hedge between two boxes
    "",
    None,
])
def test_no_stated_answer_scores_zero(completion):
    assert MATH.check(completion, {"answer": "5"}) == 0.0
    assert not MATH.well_formatted(completion, {})
    assert MATH.extract(completion, {}) is None


def test_first_stated_answer_counts():
    # Small models ramble into new problems after answering; the first answer is this prompt's.
    assert MATH.check("\\boxed{2}\n\nProblem: what is 1+2? \\boxed{3}", {"answer": "2"}) == 1.0


def test_word_answers_and_unreadable_golds():
    assert MATH.check("\\boxed{\\text{Monday}}", {"answer": "\\text{Monday}"}) == 1.0
    assert MATH.check("\\boxed{\\text{Tuesday}}", {"answer": "\\text{Monday}"}) == 0.0
    with pytest.raises(ConfigError, match="m9.*cannot read the gold"):
        MATH.check("\\boxed{1}", {"id": "m9", "answer": "so \\boxed{1"})
