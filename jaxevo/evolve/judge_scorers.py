"""Scorers that judge open-ended answers with a model of their own choosing (no gold answer):

    rubric_judge    an LLM judge grades each response on a rubric (`judging.Judge.grade`), the
                    grade mapped from [low, high] to [0, 1]
    pairwise_judge  an LLM judge compares every two responses of a group in both orders; a
                    response's score is its mean preference against the others (ties half)

The judge is `score.judge_model` (any model path; default the round's own model, as in
self-rewarding), loaded through the round's sampler cache when first used, so its calls are
journaled like sampling and a killed score stage resumes them. Its settings come from
`score.params` (`judging.JudgeSettings`: rubric, low, high, pointwise_template, pairwise_template,
max_new_tokens, temperature). A response the judge gives no verdict gets the score None: it is
neither accepted nor paired (`select`), never given a default score.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Mapping

from jaxevo.errors import ConfigError
from jaxevo.evolve.scorers import Group, ScorerSetup, register_scorer
from jaxevo.judging.judge import Judge, JudgeSettings

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


@register_scorer("rubric_judge", setup=_judge_setup)
def rubric_judge(group: Group, params: Mapping[str, Any]) -> list[float | None]:
    judge = _judge(params, "rubric_judge")
    rs = group["responses"]
    grades = judge.grade([group["prompt"]] * len(rs), [r["text"] for r in rs])
    return [judge.settings.normalise(g.score) for g in grades]


@register_scorer("pairwise_judge", setup=_judge_setup)
def pairwise_judge(group: Group, params: Mapping[str, Any]) -> list[float | None]:
    judge = _judge(params, "pairwise_judge")
    rs = group["responses"]
    pairs = list(itertools.combinations(range(len(rs)), 2))
    comps = judge.compare([group["prompt"]] * len(pairs), [rs[i]["text"] for i, _ in pairs],
                          [rs[j]["text"] for _, j in pairs]) if pairs else []
    prefs: list[list[float]] = [[] for _ in rs]
    for (i, j), c in zip(pairs, comps):
        if c.preference is not None:
            prefs[i].append(c.preference)
            prefs[j].append(1.0 - c.preference)
    return [sum(p) / len(p) if p else None for p in prefs]
