"""Built-in generators: determinism by seed, train/test disjointness, verifiable content."""

import re

import pytest

from jaxevo.data.answers import check_probe, extract_answer
from jaxevo.data.arithmetic import LEVELS, TASKS, generate_arithmetic
from jaxevo.data.arithmetic_templates import TEMPLATES
from jaxevo.data.constraints import CONSTRAINT_CHECKERS
from jaxevo.data.dialogues import FACT_SLOTS, generate_dialogues
from jaxevo.data.instructions import TOPICS, generate_instructions
from jaxevo.data.prompts import DEFAULT_ARITHMETIC_TEMPLATE, format_prompt, solution_to_response
from jaxevo.data.sources import load_source
from jaxevo.errors import ConfigError

# "a op b (op c ...) = r" inside a solution line, dollar signs allowed
_EQ = re.compile(r"((?:\$?\d+ [-+*/] )+\$?\d+) = \$?(\d+)")


# ---- arithmetic ---------------------------------------------------------------------------------

def test_arithmetic_deterministic_by_seed():
    a = generate_arithmetic(50, seed=3, levels=[1, 2])
    assert a == generate_arithmetic(50, seed=3, levels=[1, 2])
    assert a != generate_arithmetic(50, seed=4, levels=[1, 2])
    assert load_source({"type": "arithmetic", "n": 50, "seed": 3, "levels": [1, 2]}).to_list() == a


@pytest.mark.parametrize("level", LEVELS)
def test_arithmetic_splits_never_share_a_problem(level):
    train = generate_arithmetic(400, split="train", levels=[level], seed=0)
    test = generate_arithmetic(100, split="test", levels=[level], seed=1)
    assert not {r["question"] for r in train} & {r["question"] for r in test}
    assert not {r["id"] for r in train} & {r["id"] for r in test}
    # Stronger: not even the same template with the same numbers and other names.
    canon = lambda r: (r["template"], tuple(re.findall(r"\d+", r["question"])))  # noqa: E731
    assert not {canon(r) for r in train} & {canon(r) for r in test}
    assert len({r["question"] for r in train}) == 400  # distinct within a split


def test_arithmetic_answers_are_exact_and_solutions_check_out():
    records = generate_arithmetic(600, levels=LEVELS, seed=7)
    assert {r["template"] for r in records} == {t.name for t in TEMPLATES}
    assert {r["task"] for r in records} == set(TASKS)
    for r in records:
        assert r["answer"] == str(int(r["answer"])) and int(r["answer"]) >= 0
        assert r["solution"].endswith(f"\n#### {r['answer']}")
        assert extract_answer(r["solution"]) == r["answer"]
        assert extract_answer(solution_to_response(r["solution"])) == r["answer"]
        eqs = _EQ.findall(r["solution"])
        assert eqs, r["solution"]
        for lhs, rhs in eqs:  # every step of the worked solution is true arithmetic
            assert eval(lhs.replace("$", "")) == int(rhs), (r["solution"], lhs, rhs)  # noqa: S307
        assert eqs[-1][1] == r["answer"]
        assert r["prompt"] == format_prompt(r["question"]) and r["topic"] == r["task"]
        assert r["id"].startswith("arith-") and r["level"] in LEVELS


def test_arithmetic_plain_templates_match_python():
    for r in generate_arithmetic(200, levels=[1, 2, 3], tasks=["sum", "difference", "product", "quotient"]):
        expr = re.fullmatch(r"What is (.+)\?", r["question"]).group(1)
        assert eval(expr) == int(r["answer"])  # noqa: S307 - generated digits and operators only


def test_arithmetic_level1_is_one_digit_one_step():
    for r in generate_arithmetic(200, levels=[1]):
        numbers = [int(x) for x in re.findall(r"\d+", r["question"])]
        if r["task"] in ("sharing", "quotient"):  # k * q shared among k: the total is a one-digit product
            assert int(r["answer"]) < 10
            numbers = numbers[1:]
        assert all(n < 10 for n in numbers), r["question"]
        assert r["solution"].count("\n") == 1  # one step, then "#### N"


def test_arithmetic_prompt_template_options():
    bare = generate_arithmetic(3, prompt_template=None)
    assert all(r["prompt"] == r["question"] for r in bare)
    custom = load_source({"type": "arithmetic", "n": 3, "prompt_template": "Q: {question} A:"}).to_list()
    assert all(r["prompt"] == f"Q: {r['question']} A:" for r in custom)
    assert DEFAULT_ARITHMETIC_TEMPLATE.endswith("'The answer is N.'")


def test_arithmetic_errors():
    with pytest.raises(ConfigError, match="levels"):
        generate_arithmetic(5, levels=[7])
    with pytest.raises(ConfigError, match="unknown task"):
        generate_arithmetic(5, tasks=["calculus"])
    with pytest.raises(ConfigError, match="no template"):
        generate_arithmetic(5, tasks=["quotient"], levels=[4])
    with pytest.raises(ConfigError, match="split"):
        generate_arithmetic(5, split="validation")
    with pytest.raises(ConfigError, match="only .* distinct"):
        generate_arithmetic(200, tasks=["sum"], levels=[1])  # only 81 one-digit sums exist


# ---- instructions -------------------------------------------------------------------------------

def test_instructions_deterministic_and_disjoint():
    a = generate_instructions(300, seed=1)
    assert a == generate_instructions(300, seed=1)
    assert a != generate_instructions(300, seed=2)
    test = generate_instructions(100, split="test", seed=1)
    assert not {r["prompt"] for r in a} & {r["prompt"] for r in test}
    assert len({r["id"] for r in a}) == 300


def test_instructions_fields_and_constraints():
    records = generate_instructions(300, max_constraints=3)
    assert {r["topic"] for r in records} == set(TOPICS)
    for r in records:
        assert 1 <= len(r["constraints"]) <= 3 and r["prompt"] and "answer" not in r
        types = [c["type"] for c in r["constraints"]]
        assert len(types) == len(set(types)) and set(types) <= set(CONSTRAINT_CHECKERS)
        assert not ("json" in types and "bullet_count" in types)
        for c in r["constraints"]:
            if c["type"] == "keywords":
                assert set(c["words"]) <= set(TOPICS[r["topic"]][1])
    none = generate_instructions(5, max_constraints=0)
    assert all(r["constraints"] == [] for r in none)
    only = load_source({"type": "instructions", "n": 20, "topics": ["chess"]}).to_list()
    assert {r["topic"] for r in only} == {"chess"}
    with pytest.raises(ConfigError, match="unknown or no topics"):
        generate_instructions(5, topics=["knitting"])


# ---- dialogues ----------------------------------------------------------------------------------

def test_dialogues_deterministic_and_disjoint():
    a = generate_dialogues(40, seed=0)
    assert a == generate_dialogues(40, seed=0)
    assert a != generate_dialogues(40, seed=1)
    test = generate_dialogues(20, split="test", seed=0)
    assert not {r["id"] for r in a} & {r["id"] for r in test}
    assert not {tuple(s["prompt"] for ss in r["sessions"] for s in ss) for r in a} & \
        {tuple(s["prompt"] for ss in r["sessions"] for s in ss) for r in test}


def test_dialogue_probes_depend_on_earlier_sessions():
    records = generate_dialogues(60, sessions=4, update_prob=0.5, seed=2)
    n_probes = n_updates = 0
    for d in records:
        assert len(d["sessions"]) == 4 and d["prompt"] == d["sessions"][0][0]["prompt"]
        assert not any(s["kind"] == "probe" for s in d["sessions"][0])  # nothing to remember yet
        latest: dict = {}  # slot -> (value, session) as the user stated it
        step_ids = set()
        for si, steps in enumerate(d["sessions"]):
            for step in steps:
                assert step["session"] == si and step["id"] not in step_ids and step["topic"] == d["topic"]
                step_ids.add(step["id"])
                if step["kind"] in ("fact", "update"):
                    assert step["value"] in step["prompt"] and step["answer"] is None
                    latest[step["slot"]] = (step["value"], si)
                    n_updates += step["kind"] == "update"
                elif step["kind"] == "probe":
                    n_probes += 1
                    value, stated = latest[step["slot"]]
                    assert step["answer"] == value and stated < si == step["session"]
                    assert step["fact_session"] == stated
                    assert step["prompt"].endswith(FACT_SLOTS[step["slot"]][2])
                    assert value not in step["distractors"]
                    assert check_probe(f"It is {value}.", value, step["distractors"])
                else:
                    assert step["kind"] == "question" and step["answer"].isdigit()
        assert d["facts"] == {k: v for k, (v, _) in latest.items()}
        assert d["probes"] == [s for ss in d["sessions"] for s in ss if s["kind"] == "probe"]
    assert n_probes >= 60 and n_updates > 0


def test_dialogue_errors():
    with pytest.raises(ConfigError, match="facts_per_session"):
        generate_dialogues(3, sessions=2, facts_per_session=0)
    with pytest.raises(ConfigError, match="unknown key"):
        load_source({"type": "dialogues", "n": 2, "session": 3})
