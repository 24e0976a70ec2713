"""`EvolveConfig`: one self-evolution run, as frozen dataclasses (YAML + key=value overrides).

A recipe is data: its `stages:` list names the stages each round runs, in order (any registered
in `jaxevo.evolve.recipe.STAGES`). The shipped recipes (configs/self.yaml, evolve.yaml, dpse.yaml,
demo.yaml) list the same stages; what differs is data, prompts, scorer, selection and losses.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from jaxevo.errors import ConfigError
from jaxevo.losses.policy import ADVANTAGE_SCALES, check_policy_options
from jaxevo.templates import (CRITIQUE_TEMPLATE, FEEDBACK_TEMPLATE, REFINE_TEMPLATE,
                              SELF_INSTRUCT_TEMPLATE)
from jaxevo.train.config import ObjectiveSection, TrainConfig
from jaxevo.train.objectives import OBJECTIVES, check_token_weights


# Scorers that check an answer against the item's reference answer: unusable on prompts that
# have none (SELF's self-instructed questions).
REFERENCE_SCORERS = ("verifier",)

# The stages of a round in the shipped recipes (see `jaxevo.evolve.stages`).
ROUND_STAGES = ("prompts", "generate", "feedback", "refine", "score", "data", "sft", "preference",
                "control", "eval", "gate")


@dataclasses.dataclass(frozen=True)
class RunSection:
    dir: str = "runs/demo"
    rounds: int = 3
    seed: int = 0
    progress: bool = True  # progress bars
    recipe: str = "custom"  # a label for reports (self / evolve / dpse / demo)
    # The user's modules, imported before anything is looked up so that their registrations
    # (scorers, rewards, checkers, stages, losses, sources) count: module names or .py paths
    # (relative: to the current directory, else to the config file's). See jaxevo/plugins.py.
    plugins: tuple[str, ...] = ()
    # Keep each training stage's Orbax train state (params + optimizer, ~3x the model) after the
    # stage has exported its model. They serve only a resume mid-training; the demo would
    # otherwise leave ~12 GB on disk. Sets the phases' `checkpoint.final`.
    keep_checkpoints: bool = False


@dataclasses.dataclass(frozen=True)
class ModelSection:
    path: str = "smollm2-135m-instruct"  # the start model (any M of the CLI contract)
    sample_dtype: str = "bfloat16"  # compute + weight dtype for generation
    mesh: tuple[int, int, int] = (1, -1, 1)
    system: str | None = None  # system message of the chat template, if any


@dataclasses.dataclass(frozen=True)
class SelfInstructSection:
    """SELF's new prompts for later rounds (Self-Instruct, Wang et al. 2023): from round
    `from_round` on, `share` of a round's `per_round` prompts are questions the round's start model
    writes, continuing a numbered list of `seeds` example questions (`template`); `machine_seeds` of
    those examples come from earlier rounds' new questions once there are some. A new question is
    kept only if it is well formed (`min_words`..`max_words` words, starts with a letter or digit,
    no `banned` word, not an answer, with `pool_shape` what nearly every pool question has: a
    final "?", a digit), not a held-out (evaluation or gate) question, and its ROUGE-L F1 with every pool question, every earlier
    new one and every one kept before it is below `max_rouge` (0.7 in Self-Instruct). The rest of
    the round comes from the pool. New questions have no reference answer: they can be scored only
    without one (self_judge, judge, a reward model, self_consistency), never by the verifier.
    Each attempt asks `oversample` times the missing count; after `attempts`, a shortfall is filled
    from the pool (`fill_from_pool`) and reported in the stage's info."""

    enabled: bool = False
    from_round: int = 2
    share: float = 1.0  # of per_round: new questions (the rest: the pool's slice)
    seeds: int = 8
    machine_seeds: int = 2
    template: str = SELF_INSTRUCT_TEMPLATE  # {examples}, {next}
    max_new_tokens: int = 96
    temperature: float = 1.0
    oversample: float = 2.0
    attempts: int = 3
    max_rouge: float = 0.7
    min_words: int = 3
    max_words: int = 150
    banned: tuple[str, ...] = ("image", "images", "graph", "graphs", "picture", "pictures", "file",
                               "files", "map", "maps", "draw", "plot", "go to", "video", "audio",
                               "flowchart", "diagram")
    fill_from_pool: bool = True
    # Ask of a new question what >= 95% of the pool's have: a final "?", a digit (self_instruct.Shape).
    pool_shape: bool = True

    def __post_init__(self):
        if not 0.0 <= self.share <= 1.0 or not 0.0 < self.max_rouge <= 1.0:
            raise ConfigError("prompts.self_instruct.share must be in [0, 1] and max_rouge in (0, 1]")
        if self.seeds < 1 or self.attempts < 1 or self.oversample <= 0 or self.from_round < 1:
            raise ConfigError("prompts.self_instruct: seeds, attempts and from_round must be >= 1 "
                              "and oversample > 0")
        if not 0 <= self.machine_seeds <= self.seeds or not 1 <= self.min_words <= self.max_words:
            raise ConfigError("prompts.self_instruct: need 0 <= machine_seeds <= seeds and "
                              "1 <= min_words <= max_words")


@dataclasses.dataclass(frozen=True)
class PromptsSection:
    # A `jaxevo.data.load_source` spec of the unlabeled training prompts (gold answers, if any,
    # reach only the verifier scorer — never the training data).
    source: dict[str, Any] = dataclasses.field(
        default_factory=lambda: {"type": "arithmetic", "split": "train", "n": 4096, "levels": [1, 2]})
    per_round: int = 256  # prompts per round; round r takes a fresh slice of the source
    chat: bool = True  # wrap prompts in the chat template
    self_instruct: SelfInstructSection = SelfInstructSection()  # SELF: new prompts, rounds >= 2


@dataclasses.dataclass(frozen=True)
class SampleSection:
    n: int = 4  # samples per prompt
    temperature: float = 0.8
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    max_new_tokens: int = 192
    # End-of-answer patterns (regular expressions, e.g. "(?i)the answer is [^\n]*?\d\.(?=\s)"):
    # a sample or refinement ends as soon as its text matches, keeping the match; the tokens a
    # model would write after its answer are never paid for. Empty: off.
    stop_after: tuple[str, ...] = ()
    batch_size: int = 64  # sequences per sampler call
    # Completions per journaled chunk: a stage killed mid-sampling resumes after its last finished
    # chunk, every sample on its own random stream (evolve/journal.py). 0 = no journal. Resume-safe.
    journal_rows: int = 256
    # Continuous batching: a finished row takes the next waiting prompt (sampling/loop.py). Same
    # completions (to float rounding). Off: on the demo's workloads the decode steps it saved went
    # to refill prefills and padding (docs/benchmarks.md).
    # Resume-safe.
    continuous: bool = False


@dataclasses.dataclass(frozen=True)
class FeedbackSection:
    enabled: bool = False
    template: str = FEEDBACK_TEMPLATE  # {prompt}, {previous}
    max_new_tokens: int = 128
    temperature: float = 0.0


@dataclasses.dataclass(frozen=True)
class RefineSection:
    steps: int = 0  # length of the chain of self-refinement (0 = off)
    template: str = REFINE_TEMPLATE  # {prompt}, {previous}; also the training refine view's context
    only_if_rejected: bool = False  # SELF: refine only answers the feedback judged incorrect
    max_new_tokens: int = 192
    temperature: float = 0.7


@dataclasses.dataclass(frozen=True)
class ScoreSection:
    scorer: str = "verifier"  # a key of jaxevo.evolve.scorers.SCORERS
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    judge_model: str | None = None  # scorer "judge": the model that writes the feedback
    # scorer "rewards": TRL-style reward functions, [{fn: module:function or a registered reward,
    # weight: 1.0}, ...], combined as a weighted sum (jaxevo/rewards.py). Scores are in the
    # functions' units: `select.min_score` and `select.min_margin` are too.
    rewards: tuple[dict[str, Any], ...] = ()
    reward_model: str | None = None  # scorer "reward_model": a *ForSequenceClassification directory


@dataclasses.dataclass(frozen=True)
class SelectSection:
    # SFT data: the accepted responses, EVOLVE's two views of every pair, or nothing.
    sft: Literal["accepted", "refine_views", "none"] = "accepted"
    min_score: float = 0.5
    max_per_prompt: int = 1
    require_format: bool = True
    allow_truncated: bool = False  # train on responses cut off by max_new_tokens (tests only)
    pairs: Literal["none", "score", "rule"] = "none"
    min_margin: float = 0.5
    control: bool = False  # also train+eval a format-only control arm of the same size


@dataclasses.dataclass(frozen=True)
class CensorSection:
    """DPSE: satisfaction S = sum_k w_k s_k over interaction signals (weights renormalised)."""

    weights: dict[str, float] = dataclasses.field(default_factory=lambda: {
        "explicit": 0.3, "sentiment": 0.15, "continuation": 0.1, "rephrase": 0.1,
        "correction": 0.2, "engagement": 0.05, "quality": 0.1})
    quality: str = "none"  # what fills the `quality` signal: none, self_consistency or a key of censor.QUALITY
    expand_topics: int = 0  # topic-aware expansion: extra prompts from the worst-satisfied topics
    topic_alpha: float = 0.5  # frequency-aware PO: w(x) ∝ f_topic^alpha, mean 1 (0 = plain DPO)
    # Simulated reactions to fresh answers log a rating with this probability (real users rarely
    # rate); `engagement_words` new words in the next user turn count as full engagement.
    rating_prob: float = 0.2
    engagement_words: int = 8
    # Generative expansion (evolve/expansion.py): the model writes `expand_per_topic` new prompts
    # for each of the `expand_topics` worst topics from `expand_seeds` of their user turns, and
    # `expand_variants` variants of the best-received exchanges (score >= expand_min_score);
    # near-duplicates of the pool or of each other (ROUGE-L F >= expand_max_overlap) are dropped.
    expand_per_topic: int = 16
    expand_variants: int = 0
    expand_min_score: float = 0.8
    expand_seeds: int = 4
    expand_max_overlap: float = 0.7
    expand_temperature: float = 0.9
    expand_max_new_tokens: int = 64


@dataclasses.dataclass(frozen=True)
class CritiqueSection:
    """How SELF's meta-skill feedback is written (evolve/critique.py): `template` builds the
    critique from checkable facts (calculation steps, format, the final answer against the
    reference when `meta.scorer` is a checker); `model` has `model` (default: the start model; the
    papers used a stronger one) write it given the reference answer and the label, keeping it only
    if it does not contradict the label (else the template critique). Both end with the label's
    verdict line."""

    source: Literal["template", "model"] = "template"
    model: str | None = None
    template: str = CRITIQUE_TEMPLATE  # {prompt}, {previous}, {reference}, {label}
    max_new_tokens: int = 128
    temperature: float = 0.0
    reveal_reference: bool = True  # name the reference answer when the final answer misses it


@dataclasses.dataclass(frozen=True)
class MetaSection:
    """SELF's meta-skill round (round 0, before the self-evolution rounds): learn to write feedback
    and to refine from tuples (question, answer, feedback, refined answer). The paper's annotator
    is GPT-4; here the tuples come from the model's own samples checked by `scorer` against gold
    answers (METHODS.md §3.2/§5: "gold-answer-checked self-samples"): the feedback is a language
    critique (`critique`: from checkable facts, or written by a model; it may name the reference
    answer, `critique.reveal_reference`) ending with the label's verdict, the refined answer an
    accepted sample of the same question. Trained with the `self_meta` objective (three views:
    feedback, feedback-conditioned refinement, direct answer weighted by `beta`); the result is
    the start model of round 1 and, with `rounds.restart_from_base`, the model each round restarts
    from, its direct-answer view mixed into every round's SFT data."""

    enabled: bool = False
    prompts: int = 128  # taken from the END of the prompt source (rounds take theirs from the start)
    n: int = 4  # samples per prompt
    scorer: str = "verifier"
    min_score: float = 1.0  # a sample at or above this is "correct"
    beta: float = 1.0  # weight of the direct-answer view in the meta-skill loss
    epochs: int = 2  # of the meta phase (its other settings are the `sft:` phase's)
    max_length: int = 640  # tokens per view: the refine view holds question, answer, feedback, refinement
    evaluate: bool = True  # also evaluate the meta-skill model (SELF's M_meta) in round 0
    critique: CritiqueSection = CritiqueSection()
    # Restart training (`rounds.restart_from_base`) on every view of the meta-skill tuples
    # (feedback, refinement, direct answer: the `self_meta` objective, the rounds' own data as
    # direct answers); false: only their direct answers mixed into the rounds' SFT data. Off by
    # default so that a run started before the key existed resumes as it began; on in self.yaml.
    restart_views: bool = False


@dataclasses.dataclass(frozen=True)
class EvalSection:
    source: dict[str, Any] = dataclasses.field(
        default_factory=lambda: {"type": "arithmetic", "split": "test", "n": 200, "levels": [1, 2]})
    max_new_tokens: int = 192
    stop_after: tuple[str, ...] = ()  # end-of-answer patterns, as `sample.stop_after`
    # Sequences per sampler call of an evaluation; None: `sample.batch_size`. One batch for a whole
    # evaluation set decodes its steps once instead of once per batch and compiles one set of
    # programs (docs/benchmarks.md). Resume-safe.
    batch_size: int | None = None
    self_refine: bool = False  # also report accuracy after one online self-refinement step
    before: bool = True  # evaluate the start model as round 0
    # Inference strategy of each round's evaluation (jaxevo/strategies.py, `jaxevo eval
    # --refine-steps K [--self-feedback]`): accuracy after each of K self-refinement steps, in
    # eval.json's "strategy". With self_feedback the model critiques first and a chain stops when
    # its critique accepts (SELF's online self-refinement). 0: off.
    refine_steps: int = 0
    self_feedback: bool = False
    # A second held-out set (a `jaxevo.data.load_source` spec, greedy, no strategy), e.g. problems
    # whose templates never appear in training ({type: arithmetic, split: test, phrasings: unseen}):
    # each round's model and the control arm's are also evaluated on it (eval/unseen/accuracy,
    # control/unseen/accuracy). Why: held-out items of the training templates overstate the gain
    # (+13 points there, +5 on unseen phrasings in a demo run). None: off.
    unseen_source: dict[str, Any] | None = None

    def __post_init__(self):
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"eval.batch_size={self.batch_size} must be >= 1 (or null: sample.batch_size)")


@dataclasses.dataclass(frozen=True)
class RoundsSection:
    restart_from_base: bool = False  # SELF "restart": each round trains the base on all data so far
    # Round gate (off when None): a `jaxevo.data.load_source` spec of LABELLED validation items,
    # disjoint from `eval.source`. After its evaluation a round's model is kept only if its greedy
    # accuracy there is at least the kept model's + `gate_min_gain`; else the next round starts
    # from the model this round started from, and a restart (`restart_from_base`) leaves the
    # round's data out. Labels choose models, never training data. Why: SELF's self-feedback at
    # 135M accepted wrong answer-first refinements and cost 9.5 points in one round
    # (docs/results.md); a self-supervised recipe must not degrade the model.
    gate: dict[str, Any] | None = None
    gate_min_gain: float = 0.0  # negative: tolerate that much loss (validation noise)
    # The preference phase's reference model (METHODS.md §2.3, marked [I]): sft = the model the
    # phase starts from (this round's SFT result when SFT ran); previous = the previous round's
    # final model, where the activation SFT (`sft_rounds: activation`) counts as the round before
    # the first preference round (π_ref = π_1); start = this round's start model, always.
    reference: Literal["previous", "sft", "start"] = "sft"
    # Which rounds run the `sft` stage. every: each round (SELF, DPSE, the demo; EVOLVE's ablation
    # "SR-aware SFT every round"); activation: only round `activation_round`, EVOLVE's activation
    # phase (SR-aware SFT once, then rounds of refinement-aware preference training); none: never
    # (EVOLVE without the activation phase).
    sft_rounds: Literal["every", "activation", "none"] = "every"
    activation_round: int = 1


@dataclasses.dataclass(frozen=True)
class GRPOSection:
    """The online stage (`grpo`, evolve/online.py): each step samples `group_size` completions
    for each of `prompts_per_step` prompts with the current parameters, scores them with the
    weighted `rewards` (scorer name -> weight), computes group-relative advantages and takes
    `iterations` (μ) optimiser steps on that batch. Names and defaults follow TRL's GRPOConfig:
    `loss_type` grpo / bnpo / dr_grpo / dapo / cispo, `epsilon_high` None = `epsilon_low`,
    `scale_rewards`, `beta`, `importance_sampling_level` (sequence = GSPO). `advantage: rloo` uses
    the leave-one-out baseline instead of the group mean. `dynamic_sampling` (DAPO) draws more
    prompts, up to `max_draws` draws per step, in place of groups whose rewards are all equal
    (as many as the last steps needed, all at first, are sampled in one batch, `online.rollout`);
    `overlong_buffer` > 0 adds DAPO's soft overlong penalty over the last that many tokens of
    `sample.max_new_tokens`. Sampling settings (temperature, top-p, max_new_tokens, batch_size)
    are the `sample:` section's. `train:` holds the model dtypes, optimizer, micro-batch size and
    log-prob chunking of the trainer; its batch is one step's prompts_per_step x group_size
    sequences, split into micro-batches of `micro_batch_size` (gradient accumulation; None = one).
    `share_prompt` K > 1: a row of the update holds a prompt once and K of its completions
    (`train.rollout.group_batch`: the same loss and gradient from fewer tokens, the attention over
    the whole row); K divides `group_size` and `micro_batch_size`; not for models with
    sliding-window layers. 1: a row per completion."""

    steps: int = 16  # online steps per round
    prompts_per_step: int = 8
    group_size: int = 8
    iterations: int = 1
    loss_type: str = "dapo"
    advantage: Literal["grpo", "rloo"] = "grpo"
    scale_rewards: str = "group"
    beta: float = 0.0
    epsilon_low: float = 0.2
    epsilon_high: float | None = None
    importance_sampling_level: str = "token"
    delta: float | None = None
    use_bias_correction_kl: bool = True
    rewards: dict[str, float] = dataclasses.field(default_factory=lambda: {"verifier": 1.0})
    dynamic_sampling: bool = False
    max_draws: int = 3
    overlong_buffer: int = 0
    micro_batch_size: int | None = None
    share_prompt: int = 1
    checkpoint_every: int = 4  # Orbax train state + prompt position + draw counter every k steps
    keep: int = 2
    train: TrainConfig = TrainConfig(objective=ObjectiveSection(name="policy"))

    def __post_init__(self):
        check_policy_options(self.loss_type, self.importance_sampling_level)
        if self.scale_rewards not in ADVANTAGE_SCALES:
            raise ConfigError(f"grpo.scale_rewards={self.scale_rewards!r}: choose one of {', '.join(ADVANTAGE_SCALES)}")
        for name, v in (("steps", self.steps), ("prompts_per_step", self.prompts_per_step),
                        ("iterations", self.iterations), ("max_draws", self.max_draws)):
            if v < 1:
                raise ConfigError(f"grpo.{name}={v} must be >= 1")
        if self.group_size < 2:
            raise ConfigError(f"grpo.group_size={self.group_size} must be >= 2 (advantages compare "
                              "completions of the same prompt)")
        mb = self.micro_batch_size or self.prompts_per_step * self.group_size
        if (self.prompts_per_step * self.group_size) % mb:
            raise ConfigError(f"grpo.micro_batch_size={mb} must divide prompts_per_step x group_size "
                              f"= {self.prompts_per_step * self.group_size}")
        k = self.share_prompt
        if k < 1 or self.group_size % k or mb % k:
            raise ConfigError(f"grpo.share_prompt={k} (completions per row) must be >= 1 and divide "
                              f"group_size={self.group_size} and micro_batch_size={mb}")
        if not self.rewards:
            raise ConfigError("grpo.rewards is empty: give at least one scorer, e.g. {verifier: 1.0}")
        if self.beta < 0 or self.overlong_buffer < 0:
            raise ConfigError("grpo.beta and grpo.overlong_buffer must be >= 0")


@dataclasses.dataclass(frozen=True)
class EvolveConfig:
    stages: tuple[str, ...] = ROUND_STAGES  # what each round runs, in order (rounds >= 1)
    run: RunSection = RunSection()
    model: ModelSection = ModelSection()
    prompts: PromptsSection = PromptsSection()
    sample: SampleSection = SampleSection()
    feedback: FeedbackSection = FeedbackSection()
    refine: RefineSection = RefineSection()
    score: ScoreSection = ScoreSection()
    select: SelectSection = SelectSection()
    censor: CensorSection = CensorSection()
    sft: TrainConfig | None = None  # phase 1 (out_dir/model/data are filled in by the driver)
    preference: TrainConfig | None = None  # phase 2
    eval: EvalSection = EvalSection()
    rounds: RoundsSection = RoundsSection()
    meta: MetaSection = MetaSection()
    grpo: GRPOSection | None = None  # the online stage's settings (configs/grpo.yaml)

    def __post_init__(self):
        if self.run.rounds < 1:
            raise ConfigError(f"run.rounds={self.run.rounds} must be >= 1")
        if self.select.pairs != "none" and self.preference is None:
            raise ConfigError("select.pairs is set but there is no `preference:` phase to train on them")
        for key, phase in (("sft", self.sft), ("preference", self.preference)):
            _check_token_alpha(key, phase)
        if self.select.sft == "refine_views" and self.select.pairs == "none":
            raise ConfigError("select.sft=refine_views builds SFT views from pairs: set select.pairs")
        if self.select.pairs == "rule" and self.refine.steps < 1:
            raise ConfigError("select.pairs=rule pairs a refinement with its start: set refine.steps >= 1")
        if self.meta.enabled and self.sft is None:
            raise ConfigError("meta.enabled trains with the `sft:` phase's settings: add an `sft:` section")
        if self.score.rewards and self.score.scorer != "rewards":
            raise ConfigError(f"score.rewards is set but score.scorer is {self.score.scorer!r}: "
                              "set score.scorer: rewards to score with them")
        if "grpo" in self.stages and self.grpo is None:
            raise ConfigError("stages lists `grpo` but there is no `grpo:` section (see configs/grpo.yaml)")
        if self.score.scorer in ("self_judge", "judge") and not self.feedback.enabled:
            raise ConfigError(f"score.scorer={self.score.scorer} needs feedback.enabled: true")
        if ((self.censor.expand_topics > 0 or self.censor.expand_variants > 0) and self.score.scorer == "censor"
                and "expand" not in self.stages):
            raise ConfigError("censor.expand_topics / expand_variants are set but `stages:` has no `expand` "
                              "stage (list it after `score`, as configs/dpse.yaml does)")
        if self.rounds.activation_round < 1:
            raise ConfigError(f"rounds.activation_round={self.rounds.activation_round} must be >= 1 "
                              "(the round whose SFT stage runs when rounds.sft_rounds=activation)")
        if self.eval.self_feedback and self.eval.refine_steps < 1:
            raise ConfigError("eval.self_feedback critiques before each refinement step: set eval.refine_steps >= 1")
        if self.prompts.self_instruct.enabled:
            needs_ref = [n for n in (self.score.scorer, *(self.grpo.rewards if self.grpo else ()))
                         if n in REFERENCE_SCORERS]
            if needs_ref:
                raise ConfigError(
                    f"prompts.self_instruct.enabled: the model's new questions have no reference answer, "
                    f"but {', '.join(sorted(set(needs_ref)))} (score.scorer / grpo.rewards) checks "
                    "answers against one; score them with self_judge, judge, rubric_judge, "
                    "pairwise_judge, reward_model or self_consistency, or turn self_instruct off")
        if self.score.scorer == "reward_model" and not self.score.reward_model:
            raise ConfigError("score.scorer=reward_model needs score.reward_model: DIR "
                              "(a *ForSequenceClassification checkpoint)")


def _check_token_alpha(key: str, phase: TrainConfig | None) -> None:
    """``<phase>.objective.token_alpha`` with an objective or loss that cannot take it: refused
    when the config loads, not when the phase starts rounds later. A phase with plugins (whose
    objectives and losses are not registered yet) is checked when it builds."""
    if (phase is None or phase.objective.token_alpha is None or phase.plugins
            or phase.objective.name not in OBJECTIVES):
        return
    objective = OBJECTIVES.get(phase.objective.name, f"{key}.objective.name")
    try:
        check_token_weights(phase.objective, objective)
        objective.check(phase.objective)
    except ConfigError as e:
        raise ConfigError(f"{key}.{e}") from None
