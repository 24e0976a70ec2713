"""The LLM-judge scorers: scores from a scripted judge, ungraded responses kept out of the data,
and a round whose score stage runs a separate judge model."""

from __future__ import annotations

import dataclasses
import re
import shutil
from types import SimpleNamespace

import pytest

from jaxevo.config import load_config
from jaxevo.evolve import select
from jaxevo.evolve.config import EvolveConfig
from jaxevo.evolve.driver import run_evolve
from jaxevo.evolve.rundir import read_jsonl
from jaxevo.evolve.scorers import SCORERS
from jaxevo.errors import ConfigError
from jaxevo.evolve.judge_scorers import normalize_group
from jaxevo.judging.judge import Judge, JudgeSettings
from jaxevo.judging.reward_model import RewardModel
from jaxevo.sampling.api import Sampler
from tests.evolve.conftest import SHRINK, recipe


class Scripted:
    def __init__(self, rule):
        self.rule, self.calls = rule, 0

    def generate(self, prompts, sampling=None, *, chat=True, progress=None):
        self.calls += 1
        return [[SimpleNamespace(text=self.rule(p))] for p in prompts]


def _group(*texts):
    return {"item": {"id": "p1", "prompt": "Say something"}, "prompt": "Say something",
            "responses": [{"text": t, "kind": "sample", "finish": "eos"} for t in texts]}


def _shown(req):
    return [re.search(rf"Assistant {x}'s Answer\]\n(.*?)\n\[The End", req, re.S).group(1) for x in "AB"]


def test_rubric_judge_normalises_and_leaves_ungraded_none():
    grades = {"great": "Rating: [[10]]", "fine": "Rating: [[4]]", "odd": "no idea"}
    judge = Judge(Scripted(lambda req: grades[re.search(r"Answer\]\n(\w+)", req).group(1)]))
    scores = SCORERS.get("rubric_judge")(_group("great", "fine", "odd"), {"judge": judge})
    assert scores == [1.0, pytest.approx(3 / 9), None]


def test_pairwise_judge_scores_are_mean_preferences():
    # the judge prefers the longer answer and says "tie" ([[C]]) for equal lengths
    def rule(req):
        a, b = _shown(req)
        return "[[A]]" if len(a) > len(b) else "[[B]]" if len(b) > len(a) else "[[C]]"
    judge = Judge(Scripted(rule))
    scores = SCORERS.get("pairwise_judge")(_group("ccc", "a", "bb", "zz"), {"judge": judge})
    # ccc beats all 3; a loses all 3; bb beats a, loses to ccc, ties zz; zz the same
    assert scores == [1.0, 0.0, pytest.approx(0.5), pytest.approx(0.5)]
    assert judge.sampler.calls == 1  # the 6 pairs x 2 orders in one batch


def test_ungraded_responses_are_neither_accepted_nor_paired():
    g = _group("a", "b", "c")
    for r, s in zip(g["responses"], [None, 0.9, 0.1]):
        r["score"] = s
    sft = select.build_sft([g], min_score=0.0, require_format=False)
    assert [x["response"] for x in sft] == ["b"]
    pairs = select.build_pairs([g], min_margin=0.5)
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("b", "c")]
    g["responses"][2]["score"] = None
    assert select.build_pairs([g], min_margin=0.0) == []  # one graded response: no pair


def test_judge_scorer_needs_its_set_up():
    with pytest.raises(ConfigError, match="needs its round set-up"):
        SCORERS.get("pairwise_judge")(_group("a", "b"), {"seed": 0})


RECIPE = """
stages: [prompts, generate, score, data]
run: {dir: runs/j, rounds: 1, seed: 0, recipe: judged}
prompts: {source: {type: arithmetic, split: train, n: 64, levels: [1]}}
score: {scorer: pairwise_judge, params: {max_new_tokens: 6}}
select: {sft: accepted, pairs: none}
eval: {before: false, source: {type: arithmetic, split: test, n: 6, levels: [1]}}
"""


def test_a_round_scores_with_a_separate_judge_model(tmp_path, tiny_model, monkeypatch):
    loaded = []
    load = Sampler.load.__func__
    monkeypatch.setattr(Sampler, "load", classmethod(lambda cls, model, **kw: (loaded.append(str(model)),
                                                                               load(cls, model, **kw))[1]))
    judge_dir = tmp_path / "judge"
    shutil.copytree(tiny_model, judge_dir)  # another path: loaded as its own model
    (tmp_path / "r.yaml").write_text(RECIPE)
    cfg = load_config(EvolveConfig, tmp_path / "r.yaml", [
        f"run.dir={tmp_path / 'run'}", f"model.path={tiny_model}", *SHRINK, "run.rounds=1",
        "prompts.per_round=3", f"score.judge_model={judge_dir}"])
    m = run_evolve(cfg, {})
    st = m["rounds"]["1"]["stages"]
    groups = read_jsonl(tmp_path / "run" / "round_001" / "score" / "scored.jsonl")
    scores = [r["score"] for g in groups for r in g["responses"]]
    assert len(scores) == 3 * cfg.sample.n and st["score"]["responses"] == len(scores)
    # a random judge rarely states a verdict: every score is None or a mean preference
    assert all(s is None or s in (0.0, 0.5, 1.0) for s in scores)
    assert st["score"]["unscored"] == sum(s is None for s in scores)
    assert loaded == [tiny_model, str(judge_dir)]  # the policy samples, the judge scores
    assert JudgeSettings.from_mapping(cfg.score.params).max_new_tokens == 6


def test_normalize_group_hand_computed():
    assert normalize_group([1.0, 2.0, 6.0], "none") == [1.0, 2.0, 6.0]
    assert normalize_group([1.0, 2.0, 6.0], "center") == [-2.0, -1.0, 3.0]
    sd = (14 / 3) ** 0.5  # population std of (-2, -1, 3)
    assert normalize_group([1.0, 2.0, 6.0], "zscore") == pytest.approx([-2 / sd, -1 / sd, 3 / sd])
    assert normalize_group([4.0, 4.0], "zscore") == [0.0, 0.0]
    with pytest.raises(ConfigError, match="normalize='rank'"):
        normalize_group([1.0], "rank")


def test_reward_model_scorer_scores_the_conversation():
    class FakeRM:
        def score(self, prompts, completions):
            return [float(len(p) + len(c)) for p, c in zip(prompts, completions)]
    g = _group("a", "bbb")
    fn = SCORERS.get("reward_model")
    assert fn(g, {"reward_model": FakeRM()}) == [14.0, 16.0]  # len("Say something") = 13
    assert fn(g, {"reward_model": FakeRM(), "normalize": "center"}) == [-1.0, 1.0]


@pytest.fixture(scope="module")
def tiny_reward_model(tmp_path_factory, tiny_model):
    """A random reward model on the tiny policy's decoder and tokenizer (SmolLM2's chat template)."""
    import jax.numpy as jnp
    import numpy as np

    from jaxevo.judging.reward_model import export_reward_hf
    from jaxevo.weights.load import load_pretrained
    pre = load_pretrained(tiny_model)
    head = jnp.asarray(np.random.RandomState(0).randn(pre.cfg.hidden_size, 1).astype(np.float32))
    return str(export_reward_hf({"decoder": pre.params, "score": head}, pre.cfg,
                                tmp_path_factory.mktemp("rm") / "rm", pre.tokenizer))


@pytest.mark.heavy
def test_evolve_round_with_reward_model_pairs_resumes_after_each_stage(tmp_path, tiny_model, tiny_reward_model):
    # configs/evolve_chat.yaml: reward-model pairs (z-scored, margin 0.5) on the instruction generator
    extra = ["run.rounds=1", "eval.before=false", "sft.batch_size=2", "preference.batch_size=2",
             f"score.reward_model={tiny_reward_model}", "score.params.dtype=float32"]
    cfg, raw = recipe("evolve_chat", tmp_path / "killed", tiny_model, *extra)
    assert (cfg.score.scorer, cfg.score.params["normalize"], cfg.select.pairs) == ("reward_model", "zscore", "score")
    assert cfg.prompts.source["type"] == "instructions"
    stages = [s for s in cfg.stages if s != "control"]
    cfg = dataclasses.replace(cfg, stages=tuple(stages))
    raw["stages"] = stages
    # killed after every stage up to the data in turn (the later ones are the recipe's own, as
    # tests/evolve/test_resume.py checks), resumed each time
    for stage in stages[: stages.index("data") + 1]:
        m = run_evolve(cfg, raw, stop_after=(1, stage))
        assert list(m["rounds"]["1"]["stages"])[-1] == stage
    m = run_evolve(cfg, raw)
    assert m["rounds"]["1"]["done"]
    root = tmp_path / "killed" / "round_001"
    rm = RewardModel.load(tiny_reward_model, dtype="float32")
    for g in read_jsonl(root / "score" / "scored.jsonl"):  # the group's z-scored rewards
        raw_scores = rm.score([g["prompt"]] * len(g["responses"]), [r["text"] for r in g["responses"]])
        assert [r["score"] for r in g["responses"]] == pytest.approx(normalize_group(raw_scores, "zscore"), abs=1e-4)
    pairs = read_jsonl(root / "data" / "pairs.jsonl")
    assert pairs and all(p["margin"] >= 0.5 for p in pairs)
    assert m["rounds"]["1"]["stages"]["preference"]["steps"] >= 1


def test_reward_model_scorer_without_a_model_is_refused_at_load(tmp_path, tiny_model):
    with pytest.raises(ConfigError, match="score.scorer=reward_model needs score.reward_model"):
        recipe("evolve", tmp_path / "r", tiny_model, "score.scorer=reward_model")


@pytest.mark.heavy
def test_self_round_with_a_separate_rubric_judge_resumes_after_each_stage(tmp_path, tiny_model, monkeypatch):
    judge_dir = tmp_path / "judge"
    shutil.copytree(tiny_model, judge_dir)
    ask, asked = Judge.ask, []

    def graded_ask(self, requests):  # the judge model answers; a grade (by request length) is appended
        texts = ask(self, requests)
        asked.append(self.sampler._model)
        return [f"{t}\nRating: [[{1 + len(q) % 10}]]" for q, t in zip(requests, texts)]
    monkeypatch.setattr(Judge, "ask", graded_ask)
    # configs/self_chat.yaml: a rubric judge model of its own on the instruction generator
    cfg, raw = recipe("self_chat", tmp_path / "run", tiny_model, "run.rounds=1", "eval.before=false",
                      "sft.batch_size=2", f"score.judge_model={judge_dir}", "score.params.max_new_tokens=4",
                      "select.min_score=0.3")
    assert cfg.score.scorer == "rubric_judge" and cfg.prompts.source["type"] == "instructions"
    stages = list(cfg.stages)
    for stage in stages[: stages.index("data") + 1]:
        m = run_evolve(cfg, raw, stop_after=(1, stage))
        assert list(m["rounds"]["1"]["stages"])[-1] == stage
    m = run_evolve(cfg, raw)
    assert m["rounds"]["1"]["done"] and set(asked) == {str(judge_dir)}
    root = tmp_path / "run" / "round_001"
    scores = [r["score"] for g in read_jsonl(root / "score" / "scored.jsonl") for r in g["responses"]]
    assert scores and all(s is not None and 0.0 <= s <= 1.0 for s in scores)
    sft = read_jsonl(root / "data" / "sft.jsonl")
    assert sft and all(x["score"] >= 0.3 for x in sft) and m["rounds"]["1"]["stages"]["sft"]["steps"] >= 1


def test_open_ended_configs_load_and_their_stages_check():
    """configs/evolve_chat.yaml and configs/self_chat.yaml as shipped (their rounds run on tiny
    models in the two tests above)."""
    from jaxevo.evolve.recipe import check_stages
    from tests.evolve.conftest import ROOT

    ev = load_config(EvolveConfig, ROOT / "configs" / "evolve_chat.yaml")
    assert (ev.run.recipe, ev.score.scorer, ev.select.pairs) == ("evolve", "reward_model", "score")
    sf = load_config(EvolveConfig, ROOT / "configs" / "self_chat.yaml")
    assert (sf.run.recipe, sf.score.scorer, sf.meta.enabled) == ("self", "rubric_judge", False)
    for cfg in (ev, sf):
        assert cfg.prompts.source["type"] == cfg.eval.source["type"] == "instructions"
        check_stages(cfg.stages)


def _groups():
    """Prompt groups of different sizes and prompts (one with a single response: no pairs)."""
    out = []
    for k, texts in enumerate((("ccc", "a", "bb"), ("dddd",), ("e", "ffffff", "gg", "hhh"), ("ii", "jj"))):
        g = _group(*texts)
        g["prompt"] = g["item"]["prompt"] = f"Say something {k}" + "!" * k
        out.append(g)
    return out


def test_stage_wide_batches_equal_per_group_scoring():
    """The score stage's one call for all groups (`Scorer.score_all`) gives the scores of scoring
    each group alone (the judges' exactly; the reward model's to fp32 round-off), in one judge /
    reward-model call instead of one per group."""
    from jaxevo.evolve.stages.scoring import score_groups
    from tests.judging.test_reward_training import _lm
    from jaxevo.train.config import ObjectiveSection, TrainConfig
    from jaxevo.train.score_head import score_model

    def grade(req):  # a grade from the answer and the question
        ans = re.search(r"Answer\]\n(\w+)", req).group(1)
        return f"Rating: [[{1 + (len(ans) * 3 + len(req)) % 10}]]" if ans != "gg" else "no verdict"

    def prefer(req):
        a, b = _shown(req)
        return "[[A]]" if len(a) > len(b) else "[[B]]" if len(b) > len(a) else "[[C]]"
    pre = score_model(TrainConfig(objective=ObjectiveSection(name="reward_model", hparams={"init_std": 1.0})), _lm())
    rm = RewardModel(pre.cfg, pre.params, pre.tokenizer, pad_token_id=pre.cfg.pad_token_id, max_batch=4)
    calls = []

    class CountingRM:
        def score(self, prompts, completions):
            calls.append(len(prompts))
            return rm.score(prompts, completions)
    for name, params in (("rubric_judge", {"judge": Judge(Scripted(grade))}),
                         ("pairwise_judge", {"judge": Judge(Scripted(prefer))}),
                         ("reward_model", {"reward_model": CountingRM(), "normalize": "zscore"}),
                         ("reward_model", {"reward_model": CountingRM(), "normalize": "none"})):
        scorer = SCORERS.get(name)
        alone = [scorer(g, params) for g in _groups()]
        calls.clear()
        staged = _groups()
        score_groups(scorer, staged, params)
        got = [[r["score"] for r in g["responses"]] for g in staged]
        if name == "reward_model":  # fp32; rows padded to other lengths in other batches: 4e-6 measured
            assert [x for g in got for x in g] == pytest.approx([x for g in alone for x in g], rel=1e-5, abs=1e-5)
        else:
            assert got == alone, name
        if name == "reward_model":
            assert calls == [10]  # the stage's 10 responses in one call
        else:  # each group alone (the single response has no pair to judge), then one call
            assert params["judge"].sampler.calls == (4 if name == "rubric_judge" else 3) + 1
        if name == "rubric_judge":
            assert None in [s for g in alone for s in g]  # "gg" stays unjudged in both forms
