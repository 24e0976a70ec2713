"""Scorers that judge open-ended answers with a model of their own choosing (no gold answer):

    rubric_judge    an LLM judge grades each response on a rubric (`judging.Judge.grade`), the
                    grade mapped from [low, high] to [0, 1]
    pairwise_judge  an LLM judge compares every two responses of a group in both orders; a
                    response's score is its mean preference against the others (ties half)
    reward_model    a reward model's score of each (prompt, response) conversation
                    (`judging.RewardModel`, `score.reward_model: DIR`), optionally normalised per
                    prompt group (`score.params.normalize`: none | center | zscore; EVOLVE uses
                    relative rewards); `score.params.dtype` (default: model.sample_dtype)

The selection thresholds (`select.min_score`, `select.min_margin`) are in the scorer's units: [0, 1]
for the judges, reward units (or standard deviations with zscore) for a reward model.

The judge is `score.judge_model` (any model path; default the round's own model, as in
self-rewarding), loaded through the round's sampler cache when first used, so its calls are
journaled like sampling and a killed score stage resumes them. Its settings come from
`score.params` (`judging.JudgeSettings`: rubric, low, high, pointwise_template, pairwise_template,
max_new_tokens, temperature). A response the judge gives no verdict gets the score None: it is
neither accepted nor paired (`select`), never given a default score.

The score stage calls each scorer's batch form once for the whole stage (`Scorer.batch`): every
judge request of every prompt group in one generate call, every conversation in one reward-model
call (sorted by length across groups); the per-group form is the same function on one group.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from jaxevo.errors import ConfigError
from jaxevo.evolve.scorers import SCORERS, Group, Scorer, ScorerSetup
from jaxevo.judging.judge import Judge, JudgeSettings
from jaxevo.judging.reward_model import RewardModel

if TYPE_CHECKING:  # only the type: the context imports this module
    from jaxevo.evolve.context import RoundContext


class LazyJudge:
    """The round's judge, made on first use (the score stage), not when the set-up is read (the
    feedback stage reads it too, with the policy's sampler loaded)."""

    def __init__(self, ctx: "RoundContext", model: str | None, settings: JudgeSettings):
        self.ctx, self.model, self.settings = ctx, model, settings

    def get(self) -> Judge:
        return Judge(self.ctx.sampler(self.model), self.settings, progress=False)


def _judge_setup(ctx: "RoundContext") -> ScorerSetup:
    settings = JudgeSettings.from_mapping(ctx.cfg.score.params)  # a bad template fails before sampling
    return ScorerSetup(params={"judge": LazyJudge(ctx, ctx.cfg.score.judge_model, settings)})


def _judge(params: Mapping[str, Any], name: str) -> Judge:
    j = params.get("judge")
    if j is None:
        raise ConfigError(f"scorer {name!r} needs its round set-up (use it as score.scorer)")
    return j.get() if isinstance(j, LazyJudge) else j


def _flat(groups: Sequence[Group]) -> tuple[list, list[str], list[int]]:
    """Every response of every group: (prompts, texts, responses per group)."""
    prompts = [g["prompt"] for g in groups for _ in g["responses"]]
    return prompts, [r["text"] for g in groups for r in g["responses"]], [len(g["responses"]) for g in groups]


def _split(values: Sequence, counts: Sequence[int]) -> list[list]:
    out, at = [], 0
    for n in counts:
        out.append(list(values[at:at + n]))
        at += n
    return out


def rubric_judge_all(groups: Sequence[Group], params: Mapping[str, Any]) -> list[list[float | None]]:
    """Every response of every group graded in one `Judge.grade` call (the score stage's batch)."""
    judge = _judge(params, "rubric_judge")
    prompts, texts, counts = _flat(groups)
    grades = judge.grade(prompts, texts) if texts else []
    return _split([judge.settings.normalise(g.score) for g in grades], counts)


def rubric_judge(group: Group, params: Mapping[str, Any]) -> list[float | None]:
    return rubric_judge_all([group], params)[0]


def pairwise_judge_all(groups: Sequence[Group], params: Mapping[str, Any]) -> list[list[float | None]]:
    """Every two responses of each group compared (both orders), all groups' pairs in one
    `Judge.compare` call; a response's score is its mean preference against the others."""
    judge = _judge(params, "pairwise_judge")
    pairs = [(k, i, j) for k, g in enumerate(groups) for i, j in itertools.combinations(range(len(g["responses"])), 2)]
    text = lambda k, i: groups[k]["responses"][i]["text"]  # noqa: E731
    comps = judge.compare([groups[k]["prompt"] for k, _, _ in pairs], [text(k, i) for k, i, _ in pairs],
                          [text(k, j) for k, _, j in pairs]) if pairs else []
    prefs: list[list[list[float]]] = [[[] for _ in g["responses"]] for g in groups]
    for (k, i, j), c in zip(pairs, comps):
        if c.preference is not None:
            prefs[k][i].append(c.preference)
            prefs[k][j].append(1.0 - c.preference)
    return [[sum(p) / len(p) if p else None for p in group] for group in prefs]


def pairwise_judge(group: Group, params: Mapping[str, Any]) -> list[float | None]:
    return pairwise_judge_all([group], params)[0]


SCORERS.add("rubric_judge", Scorer("rubric_judge", rubric_judge, _judge_setup, batch=rubric_judge_all))
SCORERS.add("pairwise_judge", Scorer("pairwise_judge", pairwise_judge, _judge_setup, batch=pairwise_judge_all))


NORMALIZE = ("none", "center", "zscore")


def normalize_group(scores: Sequence[float], mode: str) -> list[float]:
    """One prompt group's rewards [n] made relative: `center` subtracts the group mean, `zscore`
    also divides by the group's standard deviation (ddof 0; a group of equal rewards gives 0s)."""
    if mode not in NORMALIZE:
        raise ConfigError(f"score.params.normalize={mode!r}: choose one of {', '.join(NORMALIZE)}")
    x = np.asarray(scores, np.float64)
    if mode == "none" or x.size == 0:
        return [float(v) for v in x]
    x = x - x.mean()
    if mode == "zscore":
        sd = x.std()
        x = x / sd if sd > 0 else np.zeros_like(x)
    return [float(v) for v in x]


class LazyRewardModel:
    """The round's reward model, loaded on first use (the policy's samplers released first: the
    score stage no longer needs them) and kept for the stage's other groups."""

    def __init__(self, ctx: "RoundContext", path: str, dtype: str):
        self.ctx, self.path, self.dtype, self._rm = ctx, path, dtype, None

    def get(self) -> RewardModel:
        if self._rm is None:
            self.ctx.release_samplers()
            # Sharded on the run's devices whenever there are several (an 8B reward model does
            # not fit one chip); one device: plain arrays.
            mesh = self.ctx.mesh if self.ctx.mesh is not None and self.ctx.mesh.size > 1 else None
            self._rm = RewardModel.load(self.path, dtype=self.dtype, mesh=mesh)
        return self._rm


def _reward_setup(ctx: "RoundContext") -> ScorerSetup:
    path = ctx.cfg.score.reward_model
    if not path:
        raise ConfigError("score.scorer=reward_model needs score.reward_model: DIR "
                          "(a *ForSequenceClassification checkpoint)")
    p = ctx.cfg.score.params
    normalize_group([], p.get("normalize", "none"))  # an unknown mode fails before sampling
    return ScorerSetup(params={"reward_model": LazyRewardModel(ctx, path, p.get("dtype", ctx.cfg.model.sample_dtype)),
                               "normalize": "none"})


def reward_model_all(groups: Sequence[Group], params: Mapping[str, Any]) -> list[list[float]]:
    """Every response of every group scored in one `RewardModel.score` call (it batches by
    length across the whole stage), normalised within each group."""
    rm = params.get("reward_model")
    if rm is None:
        raise ConfigError("scorer 'reward_model' needs its round set-up (use it as score.scorer)")
    rm = rm.get() if isinstance(rm, LazyRewardModel) else rm
    prompts, texts, counts = _flat(groups)
    scores = rm.score(prompts, texts) if texts else []
    return [normalize_group(s, params.get("normalize", "none")) for s in _split(scores, counts)]


def reward_model(group: Group, params: Mapping[str, Any]) -> list[float]:
    return reward_model_all([group], params)[0]


SCORERS.add("reward_model", Scorer("reward_model", reward_model, _reward_setup, batch=reward_model_all))
