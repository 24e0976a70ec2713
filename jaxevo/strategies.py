"""Inference strategies over a `Sampler`: chains of self-refinement and best-of-N selection.

EVOLVE's strategies (METHODS.md §2.4) and SELF's online self-refinement (§3):

    chain of self-refinement   y_k = M(refine(x, y_{k-1})), K steps (`refine_steps`), the refine
                               template z of training (`templates.REFINE_TEMPLATE`)
    with self-feedback (SELF)  before each step the model critiques its answer with the feedback
                               template of training (`templates.FEEDBACK_TEMPLATE`); a chain stops
                               when the feedback accepts ("Judgement: correct"), else the next
                               answer is conditioned on that feedback (the training view's
                               "Feedback:" context, `train.objectives.self_refine_prompt`)
    best-of-N                  N samples, each refined as above, one selected by `select`:
                               majority (self-consistency over the stated answers; no reference),
                               checker (the first the item's checker accepts: needs the reference
                               answer, so in evaluation an upper bound), reward_model or judge

Every step is one batched `generate` over the chains still running (never a loop over rows).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Callable, Sequence

from jaxevo.checkers import Checker
from jaxevo.errors import ConfigError
from jaxevo.evolve.verdict import parse_verdict
from jaxevo.judging.judge import prompt_as_text
from jaxevo.sampling.api import SamplingParams
from jaxevo.templates import FEEDBACK_TEMPLATE, REFINE_TEMPLATE
from jaxevo.train.objectives import self_refine_prompt

SELECTIONS = ("majority", "checker", "reward_model", "judge")


@dataclasses.dataclass(frozen=True)
class Strategy:
    """How to answer: `best_of` samples, each refined `refine_steps` times (with `self_feedback`:
    critique first, stop when the critique accepts), one kept by `select`."""

    refine_steps: int = 0
    self_feedback: bool = False
    best_of: int = 1
    select: str = "majority"
    refine_template: str = REFINE_TEMPLATE
    feedback_template: str = FEEDBACK_TEMPLATE
    feedback_max_new_tokens: int = 128

    def __post_init__(self):
        if self.refine_steps < 0:
            raise ConfigError(f"--refine-steps {self.refine_steps}: give K >= 0 (0 = no refinement)")
        if self.best_of < 1:
            raise ConfigError(f"--best-of {self.best_of}: give N >= 1")
        if self.select not in SELECTIONS:
            raise ConfigError(f"--select {self.select!r}: choose one of {', '.join(SELECTIONS)}")
        if self.self_feedback and self.refine_steps < 1:
            raise ConfigError("--self-feedback critiques before each refinement step: give --refine-steps K >= 1")

    @property
    def active(self) -> bool:
        return self.refine_steps > 0 or self.best_of > 1


@dataclasses.dataclass
class Chain:
    """One sample's chain: answers[0] the sample, answers[k] its k-th refinement; feedback[k] the
    critique of answers[k]; `stopped` the index of the answer a critique accepted (None: none did)."""

    answers: list[str]
    feedback: list[str] = dataclasses.field(default_factory=list)
    stopped: int | None = None
    logprob: float | None = None  # of the final answer, given its own context

    @property
    def final(self) -> str:
        return self.answers[-1]

    def at(self, k: int) -> str:
        """The chain's answer after step k (a stopped chain keeps its accepted answer)."""
        return self.answers[min(k, len(self.answers) - 1)]

    def as_dict(self) -> dict[str, Any]:
        return {"answers": self.answers, "feedback": self.feedback, "stopped": self.stopped}


def accepts(feedback: str) -> bool:
    """Does a critique accept the answer? Its verdict line says correct (or a full k/n score)."""
    return parse_verdict(feedback) == 1.0


def refine_chains(sampler, texts: Sequence[str], first: Sequence[Any], strategy: Strategy, *,
                  max_new_tokens: int, chat: bool = True, stop_after: Sequence[str] = (),
                  stop: Sequence[str] = (), progress: bool | None = None,
                  accept: Callable[[str], bool] = accepts) -> list[Chain]:
    """Refine each first completion (`first[i]`, an answer to the task `texts[i]`, the text the
    templates' {prompt} slot takes) `strategy.refine_steps` times; returns one Chain per row.
    Greedy feedback and refinement; per step one `generate` call for the critiques of the running
    chains and one for their refinements. A refinement is an answer: `stop` strings and
    `stop_after` patterns end it as they end the first completion."""
    chains = [Chain([c.text], logprob=getattr(c, "logprob", None)) for c in first]
    running = list(range(len(chains)))
    sp_answer = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, stop=tuple(stop),
                               stop_after=tuple(stop_after))
    sp_feedback = SamplingParams(max_new_tokens=strategy.feedback_max_new_tokens, temperature=0.0)
    for _ in range(strategy.refine_steps):
        feedback: dict[int, str] = {}
        if strategy.self_feedback and running:
            asked = [strategy.feedback_template.format(prompt=texts[i], previous=chains[i].final) for i in running]
            outs = sampler.generate(asked, sp_feedback, chat=chat, progress=progress)
            keep = []
            for i, o in zip(running, outs):
                chains[i].feedback.append(o[0].text)
                if accept(o[0].text):
                    chains[i].stopped = len(chains[i].answers) - 1
                else:
                    keep.append(i)
                    feedback[i] = o[0].text
            running = keep
        if not running:
            break
        asked = [self_refine_prompt(strategy.refine_template, texts[i], chains[i].final, feedback.get(i))
                 for i in running]
        for i, o in zip(running, sampler.generate(asked, sp_answer, chat=chat, progress=progress)):
            chains[i].answers.append(o[0].text)
            chains[i].logprob = getattr(o[0], "logprob", None)
    return chains


def select(method: str, prompts: Sequence[Any], items: Sequence[dict], candidates: Sequence[Sequence[str]],
           checkers: Sequence[Checker], *, reward_model=None, judge=None) -> list[int]:
    """The index of the kept candidate of each row (ties: the earliest). One batched call of the
    reward model or the judge over every candidate of every row."""
    if method == "majority":
        out = []
        for it, ch, cands in zip(items, checkers, candidates):
            stated = [ch.extract(c, it) for c in cands]
            votes = collections.Counter(s for s in stated if s is not None)
            out.append(stated.index(votes.most_common(1)[0][0]) if votes else 0)
        return out
    if method == "checker":
        out = []
        for it, ch, cands in zip(items, checkers, candidates):
            ok = [(ch.check(c, it) or 0.0) >= 1.0 for c in cands]
            out.append(ok.index(True) if any(ok) else 0)
        return out
    flat_p = [p for p, cands in zip(prompts, candidates) for _ in cands]
    flat_c = [c for cands in candidates for c in cands]
    if method == "reward_model":
        if reward_model is None:
            raise ConfigError("--select reward_model needs --reward-model DIR")
        scores = list(reward_model.score(flat_p, flat_c))
    elif method == "judge":
        if judge is None:
            raise ConfigError("--select judge needs --judge J")
        scores = [g.score for g in judge.grade(flat_p, flat_c)]
    else:
        raise ConfigError(f"--select {method!r}: choose one of {', '.join(SELECTIONS)}")
    out, at = [], 0
    for cands in candidates:
        row = [float("-inf") if s is None else s for s in scores[at: at + len(cands)]]
        out.append(row.index(max(row)))
        at += len(cands)
    return out


def task_text(prompt: Any) -> str:
    """The text a template's {prompt} slot takes: the prompt, or a chat as "Role: content" lines."""
    return prompt_as_text(prompt)


def run_strategy(sampler, prompts: Sequence[Any], items: Sequence[dict], samples: Sequence[Sequence[Any]],
                 strategy: Strategy, checkers: Sequence[Checker], *, max_new_tokens: int, chat: bool = True,
                 stop_after: Sequence[str] = (), stop: Sequence[str] = (), progress: bool | None = None,
                 reward_model=None, judge=None) -> tuple[list[list[Chain]], list[int]]:
    """Refine the first `strategy.best_of` samples of each row (`samples[i]`: completions of
    `prompts[i]`, a string or chat messages; the templates take `items[i]["prompt"]` where it is
    a string, as the training views do) and select one: ([row][sample] chains, the selected
    sample of each row)."""
    n = strategy.best_of
    if any(len(s) < n for s in samples):
        raise ValueError(f"best-of-{n} needs {n} samples of every prompt")
    texts = [it["prompt"] if isinstance(it.get("prompt"), str) else task_text(p) for it, p in zip(items, prompts)]
    flat = refine_chains(sampler, [t for t in texts for _ in range(n)], [c for s in samples for c in s[:n]],
                         strategy, max_new_tokens=max_new_tokens, chat=chat, stop_after=stop_after,
                         stop=stop, progress=progress)
    chains = [flat[i * n: (i + 1) * n] for i in range(len(prompts))]
    if n == 1:
        return chains, [0] * len(prompts)
    chosen = select(strategy.select, prompts, items, [[c.final for c in row] for row in chains], checkers,
                    reward_model=reward_model, judge=judge)
    return chains, chosen
