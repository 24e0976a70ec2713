"""A model against a baseline: the per-prompt records and the report, with a scripted judge and a
stand-in reward model (hand-computed win rates)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from jaxevo.judging.head_to_head import generate_outputs, judge_head_to_head, reward_head_to_head
from jaxevo.judging.judge import Judge


class Scripted:
    def __init__(self, rule):
        self.rule, self.prompts = rule, []

    def generate(self, prompts, sampling=None, *, chat=True, progress=None):
        self.prompts += list(prompts)
        return [[SimpleNamespace(text=self.rule(p))] for p in prompts]


def _longer_wins(req):  # a judge that prefers the longer answer and ties equal lengths
    a, b = (re.search(rf"Assistant {x}'s Answer\]\n(.*?)\n\[The End", req, re.S).group(1) for x in "AB")
    return "[[A]]" if len(a) > len(b) else "[[B]]" if len(b) > len(a) else "[[C]]"


def _rows(outputs, generator):
    return [{"instruction": f"q{i}", "output": o, "generator": generator} for i, o in enumerate(outputs)]


def test_judge_head_to_head_report():
    model = _rows(["long answer", "x", "same", "longest answer here"], "round1")
    base = list(reversed(_rows(["short", "longer", "SAME", "tiny"], "base")))  # matched by instruction
    rows, rep = judge_head_to_head(Judge(Scripted(_longer_wins)), model, base, n_boot=200)
    assert [r["preference"] for r in rows] == [1.0, 0.0, 0.5, 1.0]
    assert [r["output_baseline"] for r in rows] == ["short", "longer", "SAME", "tiny"]
    assert rep["win_rate"] == pytest.approx(100 * 2.5 / 4)
    assert (rep["n_wins"], rep["n_wins_base"], rep["n_draws"]) == (2, 1, 1)
    assert rep["avg_length"] == pytest.approx((11 + 1 + 4 + 19) / 4)
    assert rep["judge_both_orders_agree"] == 1.0
    assert rep["ci_low"] <= rep["win_rate"] <= rep["ci_high"]


def test_position_biased_judge_gives_ties():
    rows, rep = judge_head_to_head(Judge(Scripted(lambda req: "[[A]]")), _rows(["a", "b"], "m"), _rows(["c", "d"], "b"))
    assert [r["preference"] for r in rows] == [0.5, 0.5] and rep["win_rate"] == 50.0
    assert rep["judge_both_orders_agree"] == 0.0


def test_reward_head_to_head():
    class FakeRM:
        def score(self, prompts, completions):
            return [float(len(c)) for c in completions]
    rows, rep = reward_head_to_head(FakeRM(), _rows(["aaa", "b", "cc"], "m"), _rows(["a", "bbb", "dd"], "base"))
    assert [r["preference"] for r in rows] == [1.0, 0.0, 0.5]
    assert rep["mean_reward"] == pytest.approx(2.0) and rep["mean_reward_baseline"] == pytest.approx(2.0)
    assert rep["win_rate"] == pytest.approx(50.0)


def test_generate_outputs_are_alpaca_records():
    s = Scripted(lambda p: p.upper())
    assert generate_outputs(s, ["hi", "yo"], "base", max_new_tokens=8) == [
        {"instruction": "hi", "output": "HI", "generator": "base"},
        {"instruction": "yo", "output": "YO", "generator": "base"}]


def test_score_records_one_reward_per_completion():
    from jaxevo.errors import ConfigError
    from jaxevo.judging.reward_model import score_records

    class FakeRM:
        calls = 0

        def score(self, prompts, completions):
            FakeRM.calls += 1
            return [len(p if isinstance(p, str) else p[-1]["content"]) * 10 + len(c) for p, c in zip(prompts, completions)]
    recs = [{"prompt": "ab", "completions": ["x", "yyy"], "id": 1},
            {"messages": [{"role": "user", "content": "abc"}], "completions": ["zz"]}]
    assert score_records(FakeRM(), recs) == [{**recs[0], "scores": [21.0, 23.0]}, {**recs[1], "scores": [32.0]}]
    assert FakeRM.calls == 1
    with pytest.raises(ConfigError, match="record 0: needs 'prompt'"):
        score_records(FakeRM(), [{"prompt": "a", "completions": "not a list"}])
