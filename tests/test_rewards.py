"""Reward functions with TRL's convention: the call (by keyword, columns aligned with the
completions, chat completions as TRL passes them), the checks on what a function returns, the
weighted combination against TRL 1.16's own arithmetic, and the `rewards` scorer."""

import math

import pytest
import torch

from jaxevo.errors import ConfigError
from jaxevo.evolve import select
from jaxevo.evolve.config import EvolveConfig, ScoreSection
from jaxevo.evolve.scorers import SCORERS, reward_scores, rewards_of
from jaxevo.rewards import (REWARDS, WeightedReward, call_reward, combine, parse_rewards, register_reward,
                            reward_inputs, score_rewards)


def exact(prompts, completions, answer, **kw):
    """1 when the completion is the record's answer, None when the record has none."""
    return [None if a is None else float(c.strip() == a) for c, a in zip(completions, answer)]


def length(prompts, completions, **kw):
    return [float(len(c)) for c in completions]


def test_columns_are_the_records_other_fields_aligned_with_the_completions():
    records = [{"prompt": "p1", "answer": "4", "id": "a"}, {"prompt": "p2", "id": "b", "topic": "t"}]
    prompts, comps, cols = reward_inputs(records, [["4", "5"], ["x"]])
    assert prompts == ["p1", "p1", "p2"] and comps == ["4", "5", "x"]
    assert cols == {"answer": ["4", "4", None], "id": ["a", "a", "b"], "topic": [None, None, "t"]}
    # A chat record: its messages are the prompt and, as in TRL, the completion is a message list.
    chat = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
             "prompt": "hi", "id": "c"}]
    prompts, comps, cols = reward_inputs(chat, [["hello"]])
    assert prompts == [chat[0]["messages"]] and comps == [[{"role": "assistant", "content": "hello"}]]
    assert cols == {"id": ["c"]}


def test_a_trl_reward_function_works_unchanged():
    # trl is a peer, not a dependency of the test extra (as in tests/losses/test_trl_live.py).
    think_format_reward = pytest.importorskip("trl.rewards").think_format_reward
    rw = parse_rewards([{"fn": "trl.rewards:think_format_reward"}])
    chat = [{"messages": [{"role": "user", "content": "q"}], "id": "c"}]
    texts = ["<think>\nhm\n</think>\nyes", "no think"]
    prompts, comps, cols = reward_inputs(chat, [texts])
    combined, per = score_rewards(rw, prompts, comps, cols)
    assert combined == [1.0, 0.0] == think_format_reward([[{"content": t}] for t in texts])
    assert per == {"trl.rewards:think_format_reward": [1.0, 0.0]}


def test_combination_matches_trl_nansum():
    """TRL 1.16 GRPOTrainer: None -> NaN, (rewards_per_func * weights).nansum(dim=1), and a row
    where every function returned None stays NaN (unscorable)."""
    per = [[1.0, None, 0.0, None, 2.5], [0.5, 2.0, None, None, -1.0], [None, 1.0, 1.0, None, 0.0]]
    weights = [1.0, 0.5, -2.0]
    t = torch.tensor([[math.nan if v is None else v for v in row] for row in per]).T  # [N, F]
    ref = (t * torch.tensor(weights).unsqueeze(0)).nansum(dim=1)
    ref[torch.isnan(t).all(dim=1)] = math.nan
    got = combine(per, weights)
    for g, r in zip(got, ref.tolist()):
        assert (g is None and math.isnan(r)) or g == pytest.approx(r, abs=1e-6)
    assert got[3] is None  # no opinion anywhere


def test_what_a_reward_returns_is_checked():
    short = WeightedReward("m:short", lambda prompts, completions, **kw: [1.0])
    with pytest.raises(ConfigError, match=r"reward 'm:short' returned 1 scores for 2 completions; it must "
                                          r"return exactly one per completion"):
        call_reward(short, ["p", "p"], ["a", "b"], {})
    text = WeightedReward("m:text", lambda prompts, completions, **kw: ["good"])
    with pytest.raises(ConfigError, match=r"reward 'm:text' returned 'good' for completion 0; expected a number"):
        call_reward(text, ["p"], ["a"], {})
    scalar = WeightedReward("m:scalar", lambda prompts, completions, **kw: 1.0)
    with pytest.raises(ConfigError, match=r"reward 'm:scalar' returned a float; it must return a list"):
        call_reward(scalar, ["p"], ["a"], {})
    nan = WeightedReward("m:nan", lambda prompts, completions, **kw: [math.nan, True, 2])
    assert call_reward(nan, ["p"] * 3, ["a"] * 3, {}) == [None, 1.0, 2.0]


def test_parse_rewards_and_its_errors():
    register_reward("test_rw_exact")(exact)
    try:
        rw = parse_rewards(["test_rw_exact", {"fn": "tests.test_rewards:length", "weight": 0.01}])
        assert [(r.name, r.fn, r.weight) for r in rw] == [("test_rw_exact", exact, 1.0),
                                                         ("tests.test_rewards:length", length, 0.01)]
        with pytest.raises(ConfigError, match=r"score\.rewards\[0\]: unknown key\(s\) wieght; allowed: fn, weight"):
            parse_rewards([{"fn": "test_rw_exact", "wieght": 2}])
        with pytest.raises(ConfigError, match=r"score\.rewards\[1\]\.weight: expected a number, got 'x'"):
            parse_rewards(["test_rw_exact", {"fn": "test_rw_exact", "weight": "x"}])
        with pytest.raises(ConfigError, match=r"score\.rewards\[0\]\.fn: cannot import module 'nomod_q'"):
            parse_rewards([{"fn": "nomod_q:f"}])
    finally:
        REWARDS.remove("test_rw_exact")


def test_rewards_scorer_scores_a_group_and_selection_follows_it():
    rw = parse_rewards([{"fn": "tests.test_rewards:exact", "weight": 2.0},
                        {"fn": "tests.test_rewards:length", "weight": -0.1}])
    group = {"item": {"prompt": "2+2?", "answer": "4", "id": "q"},
             "responses": [{"text": "4"}, {"text": "five"}, {"text": " 4 "}]}
    assert reward_scores(group, {"rewards": rw}) == pytest.approx([2.0 - 0.1, -0.4, 2.0 - 0.3])
    # No opinion anywhere: the score is None, never accepted, never in a pair.
    only_exact = parse_rewards(["tests.test_rewards:exact"])
    unlabelled = {"item": {"prompt": "?", "answer": None, "id": "u"}, "responses": [{"text": "a"}, {"text": "b"}]}
    scores = reward_scores(unlabelled, {"rewards": only_exact})
    assert scores == [None, None]
    for r, s in zip(unlabelled["responses"], scores):
        r.update(score=s, kind="sample", finish="stop")
    assert select.build_sft([unlabelled], min_score=-1e9, require_format=False) == []
    assert select.build_pairs([unlabelled], min_margin=-1e9) == []


def test_scorer_config_is_checked():
    assert "rewards" in SCORERS
    with pytest.raises(ConfigError, match=r"score\.rewards is set but score\.scorer is 'verifier': set "
                                          r"score\.scorer: rewards"):
        EvolveConfig(score=ScoreSection(rewards=({"fn": "x:y"},)))
    with pytest.raises(ConfigError, match=r"score\.scorer=rewards needs score\.rewards"):
        rewards_of(())


def test_a_reward_naming_a_field_the_records_lack_says_so():
    rw = WeightedReward("m:exact", exact)
    with pytest.raises(ConfigError, match=r"reward 'm:exact' needs the field\(s\) answer, which the records "
                                          r"do not have \(their fields: id\)"):
        call_reward(rw, ["p"], ["a"], {"id": ["x"]})


def test_the_batch_form_calls_each_reward_once_with_the_same_scores():
    calls = []

    def counted(prompts, completions, answer, **kw):
        calls.append(len(completions))
        return exact(prompts, completions, answer)

    rw = (WeightedReward("counted", counted),)
    groups = [{"item": {"prompt": "a?", "answer": "1", "id": "a"}, "responses": [{"text": "1"}, {"text": "2"}]},
              {"item": {"prompt": "b?", "answer": None, "id": "b"}, "responses": [{"text": "1"}]},
              {"item": {"prompt": "c?", "answer": "3", "id": "c"}, "responses": [{"text": "3"}] * 3}]
    scorer = SCORERS["rewards"]
    batched = scorer.score_all(groups, {"rewards": rw})
    assert calls == [6] and batched == [[1.0, 0.0], [None], [1.0, 1.0, 1.0]]
    assert [scorer(g, {"rewards": rw}) for g in groups] == batched and calls == [6, 2, 1, 3]


def test_meta_tuples_leave_out_samples_without_an_opinion():
    g = {"prompt": "q", "item": {"id": "q", "prompt": "q"},
         "responses": [{"text": "good", "score": 1.0, "kind": "sample", "finish": "stop"},
                       {"text": "bad", "score": 0.0, "kind": "sample", "finish": "stop"},
                       {"text": "unknown", "score": None, "kind": "sample", "finish": "stop"}]}
    tuples = select.meta_tuples([g], require_format=False)
    assert [(t["response"], t["feedback"].splitlines()[-1]) for t in tuples] == [
        ("good", "Judgement: correct"), ("bad", "Judgement: incorrect")]
