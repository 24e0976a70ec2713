"""`TrainConfig`: one SFT or preference phase, as frozen dataclasses (loaded by `jaxevo.config`).

    model:      what to train (any `M` of the CLI contract) and its runtime dtypes / remat
    data:       the JSONL file, chat template, lengths, truncation, packing
    objective:  a name from `jaxevo.train.objectives.OBJECTIVES` and its hyperparameters
    optim:      AdamW, schedule, clipping
    checkpoint: Orbax directory layout, cadence, retention, export
    log:        metrics JSONL / TensorBoard / progress bar
    lora:       low-rank adapters (rank 0 = off: every weight trains), see `jaxevo.lora`
    top level:  out_dir, steps/epochs, batch sizes, mesh, seed
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from jaxevo.errors import ConfigError
from jaxevo.lora.config import LoraSection
from jaxevo.templates import REFINE_TEMPLATE, TRAIN_FEEDBACK_TEMPLATE


@dataclasses.dataclass(frozen=True)
class ModelSection:
    path: str = "smollm2-135m-instruct"  # HF dir, .gguf, jaxevo checkpoint dir or embedded name
    dtype: str = "bfloat16"  # compute dtype (activations, matmul inputs)
    param_dtype: str = "float32"  # master weights and optimizer state
    # How the fp32 master weights become the bf16 compute copy (jaxevo/train/precision.py):
    # stochastic = unbiased, so updates below one bf16 step train as asked (docs/numerics.md);
    # nearest = the plain cast (bf16 moves such updates by a whole step or not at all).
    rounding: Literal["stochastic", "nearest"] = "stochastic"
    remat: Literal["none", "full", "dots", "dots_no_batch"] = "none"
    # Reference model of a preference phase; None = the initial `path` weights.
    reference: str | None = None


@dataclasses.dataclass(frozen=True)
class DataSection:
    path: str = ""  # JSONL: {"prompt","response"} (SFT) or {"prompt","chosen","rejected"}
    prompt_field: str = "prompt"
    max_length: int = 512  # tokens per sequence view (prompt + response)
    truncation: Literal["left", "error"] = "left"  # too long: cut the prompt's left end, or fail
    chat_template: bool = True  # wrap prompts in the tokenizer's chat template
    system: str | None = None  # optional system message for the chat template
    append_eos: bool = True  # end every response with the tokenizer's eos token
    pad_to_multiple: int = 64  # bucket padded length to a multiple of this (<= max_length)
    packing: bool = False  # SFT only: pack short examples into max_length rows
    shuffle: bool = True
    limit: int | None = None  # use only the first N records
    # Refinement prompt for EVOLVE/SELF views ({prompt}, {previous}, {feedback} are filled in).
    refine_template: str = REFINE_TEMPLATE
    feedback_template: str = TRAIN_FEEDBACK_TEMPLATE


@dataclasses.dataclass(frozen=True)
class ObjectiveSection:
    name: str = "sft"  # see jaxevo.train.objectives.OBJECTIVES: sft, preference (dpo), evolve, evolve_srpo, self_meta
    loss_type: str = "sigmoid"  # preference: a key of jaxevo.losses.PREFERENCE_LOSSES
    beta: float = 0.1
    nll_weight: float = 0.0  # preference/evolve: + weight * token-mean NLL of the chosen response
    # Other hyperparameters passed to the loss (label_smoothing, simpo_gamma, gamma, variant, ...).
    hparams: dict[str, Any] = dataclasses.field(default_factory=dict)
    precompute_ref: bool = True  # reference log-probs once before training (else a ref forward per step)
    ref_batch_size: int = 8  # sequences per reference forward
    # DPSE's token-frequency reading (jaxevo/losses/token_frequency.py): every response log-prob
    # sum, policy and reference alike, becomes Σ_t ω(y_t) log π(y_t) with ω_v ∝ f_v^(−α) counted
    # once over the whole training set. None = off; 0 = on with ω = 1 (the plain sums).
    token_alpha: float | None = None

    def __post_init__(self):
        a = self.token_alpha
        if a is not None and (isinstance(a, bool) or not isinstance(a, (int, float)) or not a >= 0
                              or a == float("inf")):
            raise ConfigError(f"objective.token_alpha={a!r}: give a finite number >= 0 (ω ∝ "
                              f"f^(−α) down-weights frequent tokens), or null to turn it off")


@dataclasses.dataclass(frozen=True)
class OptimSection:
    lr: float = 1e-5
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0  # final lr = lr * min_lr_ratio (cosine / linear)
    weight_decay: float = 0.0  # AdamW; never applied to norms and biases
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    clip_norm: float | None = 1.0  # global-norm clipping; None = off


@dataclasses.dataclass(frozen=True)
class CheckpointSection:
    every: int = 0  # save every N steps (0 = only at the end)
    keep: int = 2  # keep the last k checkpoints
    resume: bool = True  # continue from the latest checkpoint in out_dir if there is one
    final: bool = True  # save the train state of a finished run too (false: only what `every` saved)
    export: bool = True  # write the final model as a jaxevo checkpoint dir (jaxevo.json + HF model/)


@dataclasses.dataclass(frozen=True)
class LogSection:
    every: int = 1  # log metrics every N steps
    tensorboard: bool = True
    progress: bool = True  # tqdm bar


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    out_dir: str = "runs/train"
    steps: int | None = None  # total optimizer steps; None = epochs * examples / batch_size
    epochs: float = 1.0
    batch_size: int = 8  # examples (SFT rows / preference pairs) per optimizer step
    micro_batch_size: int | None = None  # gradient accumulation: batch_size / micro_batch_size micro-steps
    mesh: tuple[int, int, int] = (1, -1, 1)  # (data, fsdp, tensor); -1 takes the remaining devices
    seed: int = 0
    logprob_chunk: int = 128  # sequence positions per log-prob chunk (never full [B,T,V] logits)
    # `jaxevo train`: the user's modules (names or .py paths), imported before the objective and
    # loss are looked up, so a loss they register can be named (jaxevo/plugins.py).
    plugins: tuple[str, ...] = ()
    vocab_chunk: int | None = None  # also chunk the vocabulary (online log-sum-exp)
    model: ModelSection = ModelSection()
    data: DataSection = DataSection()
    objective: ObjectiveSection = ObjectiveSection()
    optim: OptimSection = OptimSection()
    checkpoint: CheckpointSection = CheckpointSection()
    log: LogSection = LogSection()
    lora: LoraSection = LoraSection()

    def __post_init__(self):
        mb = self.micro_batch_size or self.batch_size
        if self.batch_size < 1 or mb < 1:
            raise ConfigError(f"batch_size={self.batch_size}, micro_batch_size={mb} must be >= 1")
        if self.batch_size % mb:
            raise ConfigError(f"batch_size={self.batch_size} is not a multiple of "
                              f"micro_batch_size={mb}")
        if self.steps is not None and self.steps < 0:
            raise ConfigError(f"steps={self.steps} must be >= 0")
        if self.data.max_length < 2:
            raise ConfigError(f"data.max_length={self.data.max_length} must be >= 2")

    @property
    def num_micro(self) -> int:
        return self.batch_size // (self.micro_batch_size or self.batch_size)

    def replace(self, **kw) -> "TrainConfig":
        return dataclasses.replace(self, **kw)
