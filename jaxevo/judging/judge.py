"""LLM judges: any model graded through the sampler, pointwise (a rubric and a score) or pairwise
(A vs B, asked in both orders).

    judge = Judge.load("path/to/judge-model")                      # or Judge(sampler)
    grades = judge.grade(prompts, answers)                        # [Grade(score 1..10 | None, text)]
    comps = judge.compare(prompts, model_answers, baseline_answers)
    comps[i].preference    # 1.0 model better in both orders, 0.0 baseline, 0.5 tie, None no verdict

Every request of a call goes to the sampler in one `generate` (it batches them); greedy by default,
so a verdict is reproducible. The judge is independent of the policy: any model path the sampler
loads (HF directory, .gguf, checkpoint, embedded name).
"""

from __future__ import annotations

import dataclasses
import string
from typing import Any, Mapping, Sequence

from jaxevo.errors import ConfigError
from jaxevo.judging.parse import combine_orders, parse_choice, parse_score
from jaxevo.judging.prompts import (DEFAULT_RUBRIC, PAIRWISE_SLOTS, PAIRWISE_TEMPLATE, POINTWISE_SLOTS,
                                    POINTWISE_TEMPLATE)
from jaxevo.sampling.api import Sampler, SamplingParams

Prompt = str | Sequence[Mapping[str, str]]  # an instruction, or the chat messages before the answer


def _check_template(template: str, slots: tuple[str, ...], required: tuple[str, ...], key: str) -> None:
    try:
        used = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as e:
        raise ConfigError(f"{key}: not a valid template ({e}); write literal braces as {{{{ }}}}") from None
    unknown, missing = used - set(slots), set(required) - used
    if unknown or missing:
        raise ConfigError(f"{key}: " + (f"unknown slot(s) {sorted(unknown)}; " if unknown else "")
                          + (f"missing slot(s) {sorted(missing)}; " if missing else "")
                          + f"the slots are {', '.join('{' + s + '}' for s in slots)}")


@dataclasses.dataclass(frozen=True)
class JudgeSettings:
    """What the judge is asked and how it answers. `low`/`high`: the score range; the templates
    default to `prompts.POINTWISE_TEMPLATE` / `PAIRWISE_TEMPLATE`."""

    rubric: str = DEFAULT_RUBRIC
    low: float = 1
    high: float = 10
    pointwise_template: str = POINTWISE_TEMPLATE
    pairwise_template: str = PAIRWISE_TEMPLATE
    max_new_tokens: int = 256
    temperature: float = 0.0
    seed: int = 0

    def __post_init__(self):
        if not self.low < self.high:
            raise ConfigError(f"judge score range: low ({self.low}) must be below high ({self.high})")
        _check_template(self.pointwise_template, POINTWISE_SLOTS, ("prompt", "answer"), "pointwise_template")
        _check_template(self.pairwise_template, PAIRWISE_SLOTS, ("prompt", "answer_a", "answer_b"),
                        "pairwise_template")

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any], key: str = "score.params") -> "JudgeSettings":
        """The settings among `m`'s keys (others, e.g. a scorer's seed or normalisation, ignored);
        a bad value is a ConfigError naming `key`."""
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in m.items() if k in names})
        except ConfigError as e:
            raise ConfigError(f"{key}: {e}") from None

    def normalise(self, score: float | None) -> float | None:
        """A grade on [low, high] -> [0, 1] (None stays None)."""
        return None if score is None else (score - self.low) / (self.high - self.low)


@dataclasses.dataclass(frozen=True)
class Grade:
    score: float | None  # on [low, high]; None: the judge stated no clear grade
    text: str            # the judge's whole answer


@dataclasses.dataclass(frozen=True)
class Comparison:
    preference: float | None  # for the first answer: 1.0 / 0.0 when both orders agree, else 0.5
    verdicts: tuple[str | None, str | None]  # "A" / "B" / "C" / None, as shown and swapped
    texts: tuple[str, str]


def prompt_as_text(prompt: Prompt) -> str:
    """The instruction as the judge reads it: the text, or a conversation as "Role: content" lines."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in prompt)


class Judge:
    """An LLM judge over a `Sampler` (or anything with its `generate(prompts, sampling, *, chat,
    progress)` returning a list of n completions with `.text` per prompt)."""

    def __init__(self, sampler: Any, settings: JudgeSettings | None = None, progress: bool = False):
        self.sampler, self.settings, self.progress = sampler, settings or JudgeSettings(), progress

    @classmethod
    def load(cls, model: str, settings: JudgeSettings | None = None, *, dtype: str = "bfloat16",
             mesh=None, progress: bool = False, **sampler_kw) -> "Judge":
        """A judge on model `model`, loaded like a policy (`Sampler.load`)."""
        return cls(Sampler.load(model, dtype=dtype, mesh=mesh, **sampler_kw), settings, progress)

    def ask(self, requests: Sequence[str]) -> list[str]:
        """The judge's answer to each request (chat template applied), in one generate call."""
        s = self.settings
        if not requests:
            return []
        sp = SamplingParams(max_new_tokens=s.max_new_tokens, temperature=s.temperature, seed=s.seed)
        outs = self.sampler.generate(list(requests), sp, chat=True, progress=self.progress)
        return [o[0].text for o in outs]

    def grade(self, prompts: Sequence[Prompt], answers: Sequence[str]) -> list[Grade]:
        """Pointwise: one grade per (prompt, answer), on [low, high] or None."""
        if len(prompts) != len(answers):
            raise ValueError(f"{len(prompts)} prompts for {len(answers)} answers")
        s = self.settings
        low, high = _fmt(s.low), _fmt(s.high)
        texts = self.ask([s.pointwise_template.format(prompt=prompt_as_text(p), answer=a, rubric=s.rubric,
                                                      low=low, high=high) for p, a in zip(prompts, answers)])
        return [Grade(parse_score(t, s.low, s.high), t) for t in texts]

    def compare(self, prompts: Sequence[Prompt], answers_a: Sequence[str], answers_b: Sequence[str]) -> list[Comparison]:
        """Pairwise: each (a, b) asked as (A=a, B=b) and as (A=b, B=a), all in one batch; a win
        only when both orders agree (`parse.combine_orders`)."""
        if not len(prompts) == len(answers_a) == len(answers_b):
            raise ValueError(f"{len(prompts)} prompts for {len(answers_a)} and {len(answers_b)} answers")
        s = self.settings
        req = []
        for p, a, b in zip(prompts, answers_a, answers_b):
            q = prompt_as_text(p)
            req += [s.pairwise_template.format(prompt=q, answer_a=a, answer_b=b, rubric=s.rubric),
                    s.pairwise_template.format(prompt=q, answer_a=b, answer_b=a, rubric=s.rubric)]
        texts = self.ask(req)
        out = []
        for i in range(0, len(texts), 2):
            v = (parse_choice(texts[i]), parse_choice(texts[i + 1]))
            out.append(Comparison(combine_orders(*v), v, (texts[i], texts[i + 1])))
        return out


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)
