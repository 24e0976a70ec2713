"""The reasoning_gym source draws the package's own problems (checked against a direct
`reasoning_gym.create_dataset`), and the `reasoning_gym` reward is the package's own verifier."""

import pytest
import reasoning_gym

from jaxevo.data import load_source
from jaxevo.errors import ConfigError
from jaxevo.rewards import parse_rewards, reward_inputs, score_rewards

SPEC = {"type": "reasoning_gym", "tasks": {"basic_arithmetic": 3, "leg_counting": 2}, "seed": 5,
        "config": {"basic_arithmetic": {"max_terms": 3}}}


def test_source_draws_the_packages_problems_interleaved():
    recs = load_source(SPEC).to_list()
    ba = reasoning_gym.create_dataset("basic_arithmetic", size=3, seed=5, max_terms=3)
    lc = reasoning_gym.create_dataset("leg_counting", size=2, seed=5)
    expected = [ba[0], lc[0], ba[1], lc[1], ba[2]]
    assert [r["prompt"] for r in recs] == [e["question"] for e in expected]
    assert [r["answer"] for r in recs] == [str(e["answer"]) for e in expected]
    assert [r["task"] for r in recs] == ["basic_arithmetic", "leg_counting"] * 2 + ["basic_arithmetic"]
    assert recs[1]["id"] == "rg/leg_counting/5/0" and len({r["id"] for r in recs}) == 5
    assert recs[0]["system"] == reasoning_gym.utils.SYSTEM_PROMPTS["default"]  # asks for <answer> tags
    assert "system" not in load_source({**SPEC, "system": "none"})[0]


def test_reward_is_the_packages_own_verdict():
    recs = load_source(SPEC).to_list() + [{"prompt": "other source", "id": "x", "answer": "1"}]
    ds = {"basic_arithmetic": reasoning_gym.create_dataset("basic_arithmetic", size=3, seed=5, max_terms=3),
          "leg_counting": reasoning_gym.create_dataset("leg_counting", size=2, seed=5)}
    texts = []
    for r in recs:
        texts.append([f"Thinking...\n<answer>{r['answer']}</answer>", "<answer>12345678</answer>",
                      f"The answer is {r['answer']}."])  # no tags: not reasoning-gym's format
    (rw,) = parse_rewards(["reasoning_gym"])
    scores, _ = score_rewards([rw], *reward_inputs(recs, texts))
    for k, r in enumerate(recs):
        got = scores[3 * k:3 * k + 3]
        if "rg_task" not in r:
            assert got == [None, None, None]  # no opinion on a record from another source
            continue
        entry = ds[r["rg_task"]][r["rg_index"]]
        direct = [ds[r["rg_task"]].score_answer(answer=a, entry=entry) for a in (r["answer"], "12345678")]
        assert got == [direct[0], direct[1], 0.0] and direct[0] == 1.0


def test_bad_specs_are_clear():
    with pytest.raises(ConfigError, match=r"Dataset 'no_such_task' not registered; known tasks: .*basic_arithmetic"):
        load_source({"type": "reasoning_gym", "tasks": ["no_such_task"]})
    with pytest.raises(ConfigError, match=r"task 'basic_arithmetic': .*unexpected keyword argument 'max_termz'"):
        load_source({"type": "reasoning_gym", "tasks": ["basic_arithmetic"], "config": {"basic_arithmetic": {"max_termz": 2}}})
    with pytest.raises(ConfigError, match=r"'tasks' is required"):
        load_source({"type": "reasoning_gym"})
    with pytest.raises(ConfigError, match=r"config for task\(s\) \['leg_counting'\] not in 'tasks'"):
        load_source({"type": "reasoning_gym", "tasks": ["basic_arithmetic"], "config": {"leg_counting": {}}})
