"""LLM judges: verdict parsing on adversarial texts, the pairwise order swap with a scripted judge,
templates, and the batching path on a tiny random model."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from jaxevo.errors import ConfigError
from jaxevo.judging.judge import Judge, JudgeSettings, prompt_as_text
from jaxevo.judging.parse import combine_orders, parse_choice, parse_score
from jaxevo.sampling import Sampler
from tests.sampling.helpers import byte_tokenizer, tiny


@pytest.mark.parametrize("text, expected", [
    ("Clear and correct. Rating: [[7]]", 7.0),
    ("Rating: [[7]]\n...as said, Rating: [[7]]", 7.0),         # repeated, agreeing
    ("Rating: [[7]] ... on reflection Rating: [[3]]", None),   # two scores
    ("Rating: [[11]]", None),                                  # out of range: not clamped
    ("Rating: [[0]]", None),
    ("Rating: [[-2]]", None),
    ("Rating: [[7.5]]", 7.5),
    ("The answer lists 3 fruits.\nScore: 8/10", 8.0),           # last grade line only
    ("I would give it 7 out of 10.", 7.0),
    ("Rating: 6", 6.0),
    ("7/10 but really 3", None),                                # two grades on the line
    ("Score: 3/5", None),                                       # another scale
    ("Score: 12/10", None),
    ("A fine answer, well written.", None),                     # no score
    ("", None),
    (None, None),
])
def test_parse_score_adversarial(text, expected):
    assert parse_score(text, 1, 10) == expected


def test_parse_score_configurable_range():
    assert parse_score("Rating: [[4]]", 1, 5) == 4.0
    assert parse_score("Rating: [[7]]", 1, 5) is None
    assert parse_score("Score: 4/5", 1, 5) == 4.0
    assert parse_score("Rating: [[0]]", 0, 100) == 0.0


@pytest.mark.parametrize("text, expected", [
    ("A is more complete. [[A]]", "A"),
    ("[[B]]", "B"),
    ("Both are equally good: [[C]]", "C"),
    ("[[A]] ... wait, [[B]]", None),
    ("Final verdict: B", "B"),
    ("The winner is Assistant A.", "A"),
    ("My verdict: a tie.", "C"),
    ("Verdict: A. The winner is B", None),
    ("Overall, Assistant B is better.", "B"),
    ("Assistant A is better here, but the verdict: B", None),
    ("A and B both have merits.", None),
    ("", None),
])
def test_parse_choice(text, expected):
    assert parse_choice(text) == expected


def test_combine_orders_truth_table():
    # first: (a, b) shown as (A, B); second: swapped, so "B" there means a
    assert combine_orders("A", "B") == 1.0
    assert combine_orders("B", "A") == 0.0
    assert combine_orders("A", "A") == 0.5  # position bias: each order picks the first shown
    assert combine_orders("B", "B") == 0.5
    assert combine_orders("C", "B") == 0.5 and combine_orders("A", "C") == 0.5 and combine_orders("C", "C") == 0.5
    assert combine_orders(None, "B") is None and combine_orders("A", None) is None


class ScriptedJudge:
    """Stands in for a Sampler: answers every request with `rule(request)`; records the calls."""

    def __init__(self, rule):
        self.rule, self.calls = rule, []

    def generate(self, prompts, sampling=None, *, chat=True, progress=None):
        self.calls.append((list(prompts), sampling, chat))
        return [[SimpleNamespace(text=self.rule(p))] for p in prompts]


def _shown(req: str) -> tuple[str, str]:
    a = re.search(r"Assistant A's Answer\]\n(.*?)\n\[The End", req, re.S).group(1)
    b = re.search(r"Assistant B's Answer\]\n(.*?)\n\[The End", req, re.S).group(1)
    return a, b


def test_pairwise_both_orders_in_one_batch_with_scripted_judge():
    # the judge prefers the longer answer, except that it always says A when the lengths are equal
    # (position bias): a win needs both orders
    def rule(req):
        a, b = _shown(req)
        return "[[A]]" if len(a) >= len(b) else "[[B]]"
    sj = ScriptedJudge(rule)
    comps = Judge(sj).compare(["q1", "q2", "q3"], ["long answer", "x", "same"], ["short", "longer", "SAME"])
    assert [c.preference for c in comps] == [1.0, 0.0, 0.5]
    assert [c.verdicts for c in comps] == [("A", "B"), ("B", "A"), ("A", "A")]
    assert len(sj.calls) == 1 and len(sj.calls[0][0]) == 6  # one batched call, two orders each
    reqs = sj.calls[0][0]
    assert _shown(reqs[0]) == ("long answer", "short") and _shown(reqs[1]) == ("short", "long answer")
    assert sj.calls[0][1].temperature == 0.0 and sj.calls[0][2] is True


def test_pairwise_unreadable_order_gives_no_verdict():
    answers = iter(["[[A]]", "I cannot decide.", "[[C]]", "[[A]]"])
    comps = Judge(ScriptedJudge(lambda req: next(answers))).compare(["q", "r"], ["a", "c"], ["b", "d"])
    assert comps[0].preference is None and comps[0].verdicts == ("A", None)
    assert comps[1].preference == 0.5


def test_pointwise_grades_with_template_and_range():
    settings = JudgeSettings(low=0, high=5, rubric="Be strict.",
                             pointwise_template="{rubric} [{low}-{high}] Q: {prompt} A: {answer}")
    sj = ScriptedJudge(lambda req: {"A: good": "Rating: [[5]]", "A: bad": "Rating: [[9]]"}.get(req[-7:], "meh"))
    grades = Judge(sj, settings).grade(["hi", "hi", [{"role": "user", "content": "hi"}]], ["good", "bad", "odd"])
    assert [g.score for g in grades] == [5.0, None, None]  # 9 is out of the 0-5 range
    assert sj.calls[0][0][0] == "Be strict. [0-5] Q: hi A: good"
    assert sj.calls[0][0][2] == "Be strict. [0-5] Q: User: hi A: odd"
    assert settings.normalise(5.0) == 1.0 and settings.normalise(2.0) == 0.4 and settings.normalise(None) is None


def test_settings_refuse_bad_templates_and_ranges():
    with pytest.raises(ConfigError, match=r"score.params: pointwise_template: unknown slot\(s\) \['question'\]"):
        JudgeSettings.from_mapping({"pointwise_template": "{question} {answer}"})
    with pytest.raises(ConfigError, match=r"missing slot\(s\) \['answer_b'\]"):
        JudgeSettings(pairwise_template="{prompt} {answer_a}")
    with pytest.raises(ConfigError, match="low"):
        JudgeSettings(low=10, high=1)
    s = JudgeSettings.from_mapping({"high": 5, "seed": 3, "normalize": "none"})
    assert (s.high, s.seed) == (5, 3)


def test_prompt_as_text_renders_conversations():
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "bye?"}]
    assert prompt_as_text(msgs) == "User: hi\nAssistant: hello\nUser: bye?"


def test_judge_batches_through_a_real_sampler():
    # A tiny random model: its verdicts are noise, but each must be what the sampler says to that
    # request alone (batching and ordering change nothing under greedy decoding).
    cfg, params = tiny("qwen2")
    sampler = Sampler(cfg, params, byte_tokenizer(), max_batch=4)
    settings = JudgeSettings(max_new_tokens=6, pointwise_template="{prompt}|{answer}",
                             pairwise_template="{prompt}|{answer_a}|{answer_b}")
    judge = Judge(sampler, settings)
    prompts, answers = ["a", "bb", "ccc", "d", "ee"], ["1", "22", "333", "4444", "5"]
    grades = judge.grade(prompts, answers)
    for p, a, g in zip(prompts, answers, grades):
        alone = sampler.generate([f"{p}|{a}"], max_new_tokens=6, temperature=0)[0][0].text
        assert g.text == alone and g.score == parse_score(alone)
    comps = judge.compare(prompts[:2], answers[:2], answers[2:4])
    assert comps[1].texts[1] == sampler.generate(["bb|4444|22"], max_new_tokens=6, temperature=0)[0][0].text
