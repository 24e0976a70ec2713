"""Scorers, selection, evaluation and data sources follow each item's checker: a multiple-choice
item is scored, voted and formatted as letters, a MATH item as expressions, an arithmetic item
exactly as before."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from jaxevo.data import load_source
from jaxevo.errors import ConfigError
from jaxevo.evaluate import evaluate
from jaxevo.evolve import select
from jaxevo.evolve.scorers import SCORERS

MC = {"id": "mc1", "checker": "choice", "choices": ["Paris", "London", "Rome"], "answer": "B"}
MATH = {"id": "m1", "checker": "math", "answer": "\\frac{1}{2}"}


def group(item, texts, finish="eos"):
    return {"item": item, "prompt": "Q?",
            "responses": [{"text": t, "finish": finish, "kind": "sample", "chain": i, "step": 0,
                           "logp": -float(i), "length": 5} for i, t in enumerate(texts)]}


def score(name, g, params=None):
    return SCORERS.get(name)(g, params or {})


def test_scorers_follow_a_choice_item():
    g = group(MC, ["The answer is (B)", "B.", "Answer: b", "The answer is A or B", "The answer is (C)", "I think so"])
    assert score("verifier", g) == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert score("format_only", g) == [1.0, 1.0, 1.0, 0.0, 1.0, 0.0]
    # votes: B three times, C once, of six responses
    assert score("self_consistency", g) == [0.5, 0.5, 0.5, 0.0, pytest.approx(1 / 6), 0.0]
    fb = dict(g, responses=[dict(r, feedback="Judgement: correct") for r in g["responses"]])
    assert score("self_judge", fb) == [1.0, 1.0, 1.0, 0.0, 1.0, 0.0]  # unformatted: 0 whatever the judge says


def test_scorers_follow_a_math_item():
    g = group(MATH, ["\\boxed{0.5}", "The answer is $\\frac{1}{2}$.", "\\boxed{1/3}", "It is 1/2"])
    assert score("verifier", g) == [1.0, 1.0, 0.0, 0.0]
    assert score("format_only", g) == [1.0, 1.0, 1.0, 0.0]
    assert score("self_consistency", g) == [0.5, 0.5, 0.25, 0.0]  # 0.5 and \frac{1}{2} vote together


def test_verifier_names_the_missing_field_of_the_items_checker():
    with pytest.raises(ConfigError, match="needs a gold 'choices'.*mc2"):
        score("verifier", group({"id": "mc2", "checker": "choice", "answer": "B"}, ["B."]))
    with pytest.raises(ConfigError, match="unknown checker 'letters'; known: .*choice"):
        score("verifier", group({"id": "x", "checker": "letters", "answer": "B"}, ["B."]))


def test_selection_uses_the_checkers_format():
    g = group(MC, ["The answer is (B)", "London, I believe", "The answer is (C)"])
    for r, s in zip(g["responses"], score("verifier", g)):
        r["score"] = s
    sft = select.build_sft([g], min_score=1.0)
    assert [r["response"] for r in sft] == ["The answer is (B)"]
    control = select.format_control([g], 5, seed=0)
    assert control and control[0]["response"] in ("The answer is (B)", "The answer is (C)")
    meta = select.meta_tuples([g])
    assert "The final answer C does not match the correct answer, B." in meta[2]["feedback"]


class Scripted:
    def __init__(self, replies):
        self.replies = replies

    def generate(self, prompts, sp, chat=True, progress=None):
        return [[SimpleNamespace(text=t, finish_reason="eos") for t in self.replies[p]] for p in prompts]


def test_evaluate_uses_each_items_checker_and_the_override():
    items = [dict(MC, prompt="mc"), dict(MATH, prompt="math"), {"id": "n", "prompt": "n", "answer": "4"}]
    replies = {"mc": ["Answer: b", "The answer is (A)", "B."], "math": ["\\boxed{0.5}", "\\boxed{2}", "x"],
               "n": ["The answer is 4.", "4", "The answer is 5."]}
    rows, summary = evaluate(Scripted(replies), items, k=3, temperature=1.0)
    assert [r["correct"] for r in rows] == [True, True, True]
    assert [r["prediction"] for r in rows] == ["B", "1/2", "4"]
    assert [r["majority"] for r in rows] == ["B", "1/2", "4"] and summary["majority@3"] == 1.0
    assert summary["formatted"] == 1.0 and summary["checker"] == ["choice", "math", "number"]
    assert {n: s["n"] for n, s in summary["by_checker"].items()} == {"choice": 1, "math": 1, "number": 1}
    # --checker: one checker for every item (here exact strings: "Answer: b" is not "B").
    rows, summary = evaluate(Scripted(replies), items[:1], k=3, temperature=1.0, checker="exact")
    assert rows[0]["prediction"] == "b" and not rows[0]["correct"] and summary["checker"] == "exact"
    with pytest.raises(ConfigError, match="unknown checker"):
        evaluate(Scripted(replies), items, checker="nope")


def test_a_source_spec_sets_the_checker_and_checks_every_record(tmp_path):
    path = tmp_path / "mc.jsonl"
    lines = [{"prompt": "Capital?", "choices": ["Paris", "London"], "answer": "A"}, {},
             {"prompt": "Largest?", "answer": "B"}]
    path.write_text("\n".join(json.dumps(x) if x else "" for x in lines) + "\n")
    source = load_source({"type": "jsonl", "path": str(path), "checker": "choice"})
    assert source[0]["checker"] == "choice"
    with pytest.raises(ConfigError, match=rf"{path} line 3: checker 'choice' needs the field 'choices'"):
        list(source)
    with pytest.raises(ConfigError, match="unknown checker 'mcq'; known: .*choice, code"):
        load_source({"type": "jsonl", "path": str(path), "checker": "mcq"})
    # The built-in generators keep their records and gain the key; shards keep the locations.
    arith = load_source({"type": "arithmetic", "split": "test", "n": 4, "checker": "number"})
    assert {r["checker"] for r in arith} == {"number"}
    assert load_source({"type": "jsonl", "path": str(path), "limit": 2}).shard(1, 2).where(0) == f"{path} line 3"


def test_check_many_equals_one_by_one():
    from jaxevo.checkers import check_many, checker_for

    code = {"id": "c", "checker": "code", "test": "assert f() == 1"}
    records = [MC, MATH, {"id": "n", "answer": "4"}, code, code, code]
    texts = ["B.", "\\boxed{0.5}", "The answer is 5.", "```python\ndef f():\n    return 1\n```",
             "```python\ndef f():\n    return 2\n```", "def f(): return 1"]
    assert check_many(texts, records) == [1.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    assert check_many(texts, records, workers=1) == [checker_for(r).check(t, r) for t, r in zip(texts, records)]
    # One checker for all: exact strings read "Answer: b" as "b", not the letter B.
    assert check_many(["Answer: b"], [MC]) == [1.0] and check_many(["Answer: b"], [MC], checker="exact") == [0.0]


def test_a_records_own_checker_is_checked_where_it_is_read(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in [
        {"prompt": "2+2?", "answer": "4"},                                   # no checker: number
        {"prompt": "Pick", "checker": "choice", "choices": ["x", "y"], "answer": "A"},
        {"prompt": "Pick", "checker": "choise", "answer": "A"}]) + "\n")
    source = load_source({"type": "jsonl", "path": str(path)})
    assert "checker" not in source[0] and source[1]["checker"] == "choice"
    with pytest.raises(ConfigError, match=rf"{path} line 3: unknown checker 'choise'; known: .*choice"):
        list(source)


def test_the_verifier_runs_code_items():
    item = {"id": "c1", "checker": "code", "test": "assert double(4) == 8", "prompt": "Write double(x)."}
    g = group(item, ["```python\ndef double(x):\n    return 2 * x\n```", "```python\ndef double(x):\n    return x\n```",
                     "```python\nimport os\nwhile True:\n    os.fork()\n```", "I cannot."])
    assert score("verifier", g) == [1.0, 0.0, 0.0, 0.0]
    assert score("format_only", g) == [1.0, 1.0, 1.0, 0.0]
