"""`exact`, `normalized` (SQuAD's normalisation) and `regex`, and the stated-answer spans they read."""

from __future__ import annotations

import pytest

from jaxevo.checkers import get_checker
from jaxevo.checkers.spans import answer_spans, boxed_spans
from jaxevo.checkers.strings import squad_normalize, stated_answer
from jaxevo.errors import ConfigError

EXACT, NORM, REGEX = (get_checker(n) for n in ("exact", "normalized", "regex"))


def test_stated_answer():
    assert stated_answer("Thinking...\nThe answer is Paris.") == "Paris"
    assert stated_answer("The answer is **Paris**. It is in France.") == "Paris"
    assert stated_answer("Answer: \"Paris\"") == "Paris"
    assert stated_answer("\\boxed{Paris}") == "Paris"
    assert stated_answer("Paris") == "Paris"          # a one-line reply is its own answer
    assert stated_answer("Paris.\nIt is in France.") is None  # several lines, no marker
    assert stated_answer("The answer is 3.14 exactly.") == "3.14 exactly"  # a decimal point is no sentence end
    assert stated_answer("") is None and stated_answer(None) is None


def test_exact():
    assert EXACT.check("The answer is Paris.", {"answer": "Paris"}) == 1.0
    assert EXACT.check("The answer is paris.", {"answer": "Paris"}) == 0.0
    assert EXACT.check("The answer is Paris, France.", {"answer": "Paris"}) == 0.0
    assert EXACT.check("Answer: Lutetia", {"answer": ["Paris", "Lutetia"]}) == 1.0  # aliases


@pytest.mark.parametrize("said,gold,same", [
    ("The Eiffel Tower!", "eiffel tower", True),     # case, article, punctuation
    ("  an   apple ", "Apple", True),                # whitespace, article
    ("U.S.A.", "usa", True),
    ("the theatre", "theatre", True),
    ("Theatre district", "theatre", False),
    ("apples", "apple", False),
])
def test_normalized_follows_squad(said, gold, same):
    assert NORM.check(f"The answer is {said}", {"answer": gold}) == float(same)


def test_squad_normalize_hand_computed():
    # SQuAD v1.1 evaluate script: lower, remove punctuation, remove articles, fix whitespace.
    assert squad_normalize("The  Quick, Brown Fox!") == "quick brown fox"
    assert squad_normalize("A-ha") == "aha"  # punctuation goes before articles are looked for
    assert squad_normalize("Anna") == "anna"


def test_regex():
    rec = {"id": "d1", "answer": r"\d{4}-\d{2}-\d{2}"}
    assert REGEX.check("Answer: 2024-01-05", rec) == 1.0
    assert REGEX.check("Answer: 2024-01-05 or so", rec) == 0.0  # the whole answer must match
    assert REGEX.check("Answer: 5 Jan 2024", rec) == 0.0
    with pytest.raises(ConfigError, match="d2.*regular expression"):
        REGEX.check("Answer: x", {"id": "d2", "answer": "(unclosed"})


def test_spans_balance_braces_and_skip_escaped_ones():
    assert boxed_spans("x \\boxed{\\frac{a}{b}} y") == [(2, 21, "\\frac{a}{b}")]  # end is exclusive
    assert boxed_spans("\\boxed{\\{1, 2\\}}")[0][2] == "\\{1, 2\\}"
    assert boxed_spans("\\boxed{unclosed") == []
    # A box right after a marker is one answer, not two.
    assert len(answer_spans("The answer is \\boxed{4}.")) == 1
