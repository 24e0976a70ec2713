"""The checker registry: names, `checker_for`, missing fields, and the `number` / `probe` /
`constraints` checkers being today's functions (the demo's scores must not move)."""

from __future__ import annotations

import pytest

from jaxevo.checkers import CHECKERS, check_record_fields, checker_for, get_checker
from jaxevo.data.answers import answers_match, check_probe, extract_answer, follows_format
from jaxevo.data.arithmetic import generate_arithmetic
from jaxevo.data.constraints import constraint_score
from jaxevo.data.prompts import solution_to_response
from jaxevo.errors import ConfigError

BUILT_IN = {"number", "probe", "math", "choice", "exact", "normalized", "regex", "constraints", "code"}


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ConfigError) as e:
        get_checker("maths")
    for name in BUILT_IN:
        assert name in str(e.value)
    assert BUILT_IN <= set(CHECKERS)


def test_checker_for():
    assert checker_for({"answer": "3"}).name == "number"
    assert checker_for({"answer": "3"}, default="math").name == "math"
    assert checker_for({"checker": "choice"}).name == "choice"
    assert checker_for({"kind": "probe", "answer": "Rex"}).name == "probe"
    with pytest.raises(ConfigError, match="unknown checker 'nope'"):
        checker_for({"checker": "nope"})


def test_missing_field_names_where_and_what():
    with pytest.raises(ConfigError, match=r"data\.jsonl line 7: checker 'choice' needs the field 'choices'"):
        check_record_fields(get_checker("choice"), {"answer": "B"}, "data.jsonl line 7")
    check_record_fields(get_checker("constraints"), {"constraints": []}, "x")  # no answer needed


def _corpus():
    rng_texts = ["The answer is 7.", "#### 1,234", "\\boxed{3.50}", "Answer: $5", "The answer is 12 or 13",
                 "no answer 42", "The answer is 7. Wait, 13", "", None, "The answer is -0.", "Final answer: 1e3"]
    items = generate_arithmetic(40, seed=3, levels=(1, 2))
    return [(t, {"answer": "7"}) for t in rng_texts] + [
        (solution_to_response(it["solution"]), it) for it in items] + [
        ("The answer is 1.", it) for it in items]


def test_number_is_todays_verifier():
    number = get_checker("number")
    for text, item in _corpus():
        assert number.check(text, item) == float(answers_match(extract_answer(text), item["answer"]))
        assert number.extract(text, item) == extract_answer(text)
        assert number.well_formatted(text, item) == follows_format(text, item)


def test_probe_is_todays_probe_check():
    probe = get_checker("probe")
    item = {"kind": "probe", "answer": "Rex", "distractors": ["Max"]}
    for text in ["Your dog is called Rex.", "It is Rex or Max.", "Rexford.", "", "You told me his name is Rex. "
                 "He is a good dog and you love him very much, as you said many times before today."]:
        assert probe.check(text, item) == float(check_probe(text, "Rex", ["Max"]))
        assert probe.well_formatted(text, item) == follows_format(text, item)
    assert probe.extract("Your dog is  Rex.", item) == probe.extract("your dog is Rex.", item)


def test_constraints_is_the_share_satisfied():
    cs = [{"type": "lowercase"}, {"type": "no_commas"}, {"type": "word_count", "max": 3}]
    rec = {"constraints": cs}
    for text in ["hello there friend, hi", "hi there", "Hello", "", None]:
        assert get_checker("constraints").check(text, rec) == constraint_score(text, cs)
    assert get_checker("constraints").check("hello, friend", rec) == pytest.approx(2 / 3)
    assert not get_checker("constraints").well_formatted("  ", rec)
