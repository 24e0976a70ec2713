"""Scorers: how a round decides which of its own responses are good. A registry of small objects.

A scorer sees one prompt's *group* — the item (prompt, gold answer if any, topic...) and all its
responses (samples and refinements, with feedback texts when a feedback stage ran) — and returns
one score per response, in [0, 1] for the built-in ones. Groups let self-consistency vote and let a Censor compare.

    verifier          the item's answer checker against its gold (environment feedback)
    format_only       1 if the response states an answer in the item's format (the control)
    self_consistency  share of the group's stated answers that agree with this one
    self_judge        the model's own feedback verdict ("Judgement: correct") — needs a feedback stage
    judge             same verdict parser over feedback written by another model (`score.judge_model`)
    censor            DPSE satisfaction from the signals of logged or simulated user turns (censor.py)
    rewards           TRL-style reward functions of `score.rewards`, weighted (see jaxevo/rewards.py);
                      scores in the functions' own units, None where none had an opinion

`score.scorer` may also name the user's own `fn(group, params)` as `package.module:attribute`.

A scorer that needs set-up for a round (the judge's model, the Censor's weights and topic
statistics) has a `setup(ctx) -> ScorerSetup` hook; the stages read that struct and never the
scorer's name. Add one with `@register_scorer("name", setup=...)`, from any module.

Each item is checked by its own answer checker (`jaxevo.checkers.checker_for`: the record's
``checker``, set by its source spec, default ``number``), which also says what "well formatted"
and "the stated answer" mean for it. Only answers in the checker's strict format count
(DESIGN.md: the last-number fallback made votes agree on numbers copied from the question).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Mapping

from jaxevo.checkers import check_many, checker_for
from jaxevo.errors import ConfigError
from jaxevo.evolve import censor as censor_
from jaxevo.evolve import verdict
from jaxevo.plugins import check_signature
from jaxevo.registry import Registry
from jaxevo.rewards import parse_rewards, reward_inputs, score_rewards

if TYPE_CHECKING:  # the context holds the round's set-up scorer; only its type is needed here
    from jaxevo.evolve.context import RoundContext

Group = Mapping[str, Any]  # {"item": record, "responses": [{"text", "feedback"?, ...}]}
ScoreFn = Callable[[Group, Mapping[str, Any]], list[float]]


@dataclasses.dataclass(frozen=True)
class ScorerSetup:
    """What a scorer asks of a round (the defaults: nothing).

    params          defaults of the params every call gets (`score.params` and the seed win)
    feedback_model  the model that writes the feedback the scorer reads (None: the round's model)
    expand_topics   DPSE topic-aware expansion after scoring: prompts from the k worst topics
    topic_alpha     DPSE frequency-aware preference weights w ∝ f_topic^alpha (0: none)
    expansion       DPSE generative expansion settings (evolve/expansion.py; the `expand` stage):
                    per_topic, variants, min_score, seeds, max_overlap, temperature, max_new_tokens
    """

    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    feedback_model: str | None = None
    expand_topics: int = 0
    topic_alpha: float = 0.0
    expansion: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Scorer:
    """A named score function, `scorer(group, params) -> [score per response]`, with an optional
    `setup(ctx)` hook run once per round."""

    name: str
    score: ScoreFn
    setup: Callable[["RoundContext"], ScorerSetup] | None = None
    # Optional batch form: all groups in one call -> [scores per group] (same scores as `score`).
    batch: Callable[[list[Group], Mapping[str, Any]], list[list]] | None = None

    def __call__(self, group: Group, params: Mapping[str, Any]) -> list[float]:
        return self.score(group, params)

    def score_all(self, groups: list[Group], params: Mapping[str, Any]) -> list[list]:
        """The scores of every group: the batch form when there is one, else group by group."""
        if self.batch is not None:
            return self.batch(groups, params)
        return [self.score(g, params) for g in groups]

    def prepare(self, ctx: "RoundContext") -> ScorerSetup:
        """The round's set-up, its params completed with `score.params` and the round's seed."""
        s = self.setup(ctx) if self.setup is not None else ScorerSetup()
        return dataclasses.replace(s, params={**s.params, **ctx.cfg.score.params, "seed": ctx.seed})


def _plain_scorer(obj: object, ref: str, where: str) -> Scorer:
    """A Scorer, or a plain `fn(group, params) -> scores` (a TRL-style reward function goes in
    `score.rewards` with `score.scorer: rewards`)."""
    if isinstance(obj, Scorer):
        return obj
    check_signature(obj, ("group", "params"), where,
                    expected="fn(group, params) -> [score per response] (for a TRL-style "
                             "fn(prompts, completions, **columns) use score.scorer: rewards and score.rewards)")
    return Scorer(ref, obj)  # type: ignore[arg-type]


SCORERS: Registry[Scorer] = Registry("scorer", adapt=_plain_scorer)


def register_scorer(name: str, *aliases: str, setup: Callable[["RoundContext"], ScorerSetup] | None = None):
    """Decorator: register `fn(group, params) -> scores` as scorer `name` (and each alias)."""
    def deco(fn: ScoreFn) -> ScoreFn:
        SCORERS.add(name, Scorer(name, fn, setup), *aliases)
        return fn
    return deco


@register_scorer("verifier")
def verifier(group: Group, params: Mapping[str, Any]) -> list[float]:
    item = group["item"]
    checker = checker_for(item)
    for field in checker.needs:
        if item.get(field) is None:
            raise ConfigError(f"scorer 'verifier' needs a gold {field!r} on every prompt (checker "
                              f"{checker.name!r}); {item.get('id')} has none (use self_consistency or self_judge)")
    # check_many: a group's code checks run side by side (each is a process). None is a
    # checker's "no opinion": the verifier accepts only what it can confirm.
    texts = [r["text"] for r in group["responses"]]
    return [float(v or 0.0) for v in check_many(texts, [item] * len(texts), checker)]


@register_scorer("format_only")
def format_only(group: Group, params: Mapping[str, Any]) -> list[float]:
    checker = checker_for(group["item"])
    return [float(checker.well_formatted(r["text"], group["item"])) for r in group["responses"]]


@register_scorer("self_consistency")
def self_consistency(group: Group, params: Mapping[str, Any]) -> list[float]:
    checker = checker_for(group["item"])
    answers = [checker.extract(r["text"], group["item"]) for r in group["responses"]]
    votes = collections.Counter(a for a in answers if a is not None)
    total = len(answers)
    return [votes[a] / total if a is not None else 0.0 for a in answers]


@register_scorer("self_judge")
def self_judge(group: Group, params: Mapping[str, Any]) -> list[float]:
    """The verdict of the response's own feedback; unparsable verdicts score `unparsed` (0)."""
    unparsed = float(params.get("unparsed", 0.0))
    checker = checker_for(group["item"])
    out = []
    for r in group["responses"]:
        if "feedback" not in r:
            raise ConfigError("scorer 'self_judge' needs the feedback stage (feedback.enabled: true)")
        v = verdict.parse_verdict(r.get("feedback"))
        # An answer without the required format cannot be accepted, whatever the judge says.
        out.append(0.0 if not checker.well_formatted(r["text"], group["item"]) and params.get("require_format", True)
                   else (unparsed if v is None else v))
    return out


def _judge_setup(ctx: "RoundContext") -> ScorerSetup:
    """The judge reads feedback written by `score.judge_model` instead of the round's model."""
    if not ctx.cfg.score.judge_model:
        raise ConfigError("score.scorer=judge needs score.judge_model")
    return ScorerSetup(feedback_model=ctx.cfg.score.judge_model)


SCORERS.add("judge", Scorer("judge", self_judge, _judge_setup))  # self_judge's parser, another writer


def _censor_setup(ctx: "RoundContext") -> ScorerSetup:
    """The Censor's signal weights and quality signal, and DPSE's two topic expansions."""
    c = ctx.cfg.censor
    if c.quality not in ("none", "self_consistency"):
        censor_.QUALITY.get(c.quality, "censor.quality")  # an unknown name fails before sampling
    expansion = {"per_topic": c.expand_per_topic, "variants": c.expand_variants, "min_score": c.expand_min_score,
                 "seeds": c.expand_seeds, "max_overlap": c.expand_max_overlap,
                 "temperature": c.expand_temperature, "max_new_tokens": c.expand_max_new_tokens}
    return ScorerSetup(params={"weights": c.weights, "quality": c.quality, "rating_prob": c.rating_prob,
                               "engagement_words": c.engagement_words},
                       expand_topics=c.expand_topics, topic_alpha=c.topic_alpha, expansion=expansion)


SCORERS.add("censor", Scorer("censor", censor_.satisfaction_scores, _censor_setup))


def _rewards_setup(ctx: "RoundContext") -> ScorerSetup:
    """The reward functions of `score.rewards`, imported and checked once per round."""
    return ScorerSetup(params={"rewards": rewards_of(ctx.cfg.score.rewards)})


def rewards_of(specs) -> tuple:
    """`score.rewards` parsed (a ConfigError when empty: the scorer has nothing to call)."""
    if not specs:
        raise ConfigError("score.scorer=rewards needs score.rewards: [{fn: module:function, weight: 1.0}, ...]")
    return parse_rewards(specs, "score.rewards")


def reward_scores(group: Group, params: Mapping[str, Any]) -> list[float | None]:
    """The weighted reward of every response of the group (TRL's convention: jaxevo/rewards.py);
    the item's fields other than the prompt are the reward functions' columns."""
    return reward_scores_all([group], params)[0]


def reward_scores_all(groups: list[Group], params: Mapping[str, Any]) -> list[list[float | None]]:
    """`reward_scores` of every group, each reward function called once on all responses."""
    texts = [[r["text"] for r in g["responses"]] for g in groups]
    if not any(texts):
        return [[] for _ in groups]
    prompts, completions, columns = reward_inputs([g["item"] for g in groups], texts)
    flat = score_rewards(params["rewards"], prompts, completions, columns)[0]
    out, pos = [], 0
    for t in texts:
        out.append(flat[pos:pos + len(t)])
        pos += len(t)
    return out


SCORERS.add("rewards", Scorer("rewards", reward_scores, _rewards_setup, batch=reward_scores_all))
