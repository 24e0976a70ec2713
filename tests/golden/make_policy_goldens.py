"""Generate tests/golden/policy_losses.json by running TRL 1.16's own GRPO/RLOO code.

    PYTHONPATH=$PWD .venv/bin/python tests/golden/make_policy_goldens.py

TRL's code is called, not re-typed:

* Losses: ``trl.GRPOTrainer._compute_loss`` on a stand-in ``self`` whose
  ``_get_per_token_logps_and_entropies`` returns fixed per-token log-probs (a leaf tensor, so
  ``backward`` also gives TRL's gradient d loss / d logps) and entropies. The loss, TRL's logged
  metrics and that gradient are recorded per case.
* Advantages: the advantage block of ``GRPOTrainer._generate_and_score_completions`` (from
  ``unscorable_mask = ...`` to ``advantages = torch.nan_to_num(...)``) and the same block of
  ``RLOOTrainer._generate_and_score_completions`` are cut out of TRL's installed source with
  ``inspect`` and executed on fixed rewards; a TRL release that moves them fails here loudly.

The live test (tests/losses/test_policy_trl_live.py) imports :func:`compute_cases` from here.
"""

from __future__ import annotations

import inspect
import json
import textwrap
import warnings
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np

B, T, SEED = 6, 12, 0
G = 4  # completions per prompt for the advantage cases
OUT = Path(__file__).with_name("policy_losses.json")

_BASE = {"beta": 0.0, "epsilon_low": 0.2, "epsilon_high": 0.2, "importance_sampling_level": "token",
         "delta": None, "use_bias_correction_kl": True, "max_completion_length": T, "on_policy": False}
_VARIANTS = [
    {},
    {"beta": 0.04},
    {"beta": 0.04, "use_bias_correction_kl": False},
    {"epsilon_low": 0.1, "epsilon_high": 0.28},
    {"beta": 0.1, "epsilon_low": 0.15, "epsilon_high": 0.3, "importance_sampling_level": "sequence"},
    {"importance_sampling_level": "sequence"},
    {"delta": 1.3},
    {"on_policy": True, "beta": 0.04},
    {"max_completion_length": 20},
]
LOSS_CASES = [(lt, {**_BASE, **v}) for lt in ("grpo", "bnpo", "dr_grpo", "dapo") for v in _VARIANTS]
LOSS_CASES += [("cispo", {**_BASE, "epsilon_high": eh, **v})
               for eh in (1.2, 5.0) for v in ({}, {"beta": 0.04}, {"on_policy": True})]
ADV_CASES = [("grpo", s) for s in ("group", "batch", "none")] + [("rloo", False), ("rloo", True)]


def make_inputs(b: int = B, t: int = T, seed: int = SEED) -> dict:
    """Fixed per-token log-probs (policy, old, reference), advantages, a ragged mask with one
    fully padded row, entropies; and rewards in groups of G (an all-equal group, an unscorable
    completion, a group with one scorable completion)."""
    rng = np.random.default_rng(seed)
    f = np.float32
    logps = -rng.uniform(0.05, 3.0, size=(b, t)).astype(f)
    old = (logps + rng.normal(0.0, 0.3, size=(b, t))).astype(f)  # ratios ~ e^±0.3: some clipped
    ref = (logps + rng.normal(0.0, 0.5, size=(b, t))).astype(f)
    adv = rng.normal(0.0, 1.0, size=b).astype(f)
    lengths = rng.integers(1, t + 1, size=b)
    lengths[1] = 0  # a fully padded row
    lengths[2] = t
    mask = (np.arange(t)[None, :] < lengths[:, None]).astype(f)
    entropies = rng.uniform(0.0, 4.0, size=(b, t)).astype(f)
    rewards = rng.choice([0.0, 0.25, 1.0, 2.0], size=(5, G)).astype(f)
    rewards[0] = 1.0  # all equal: zero std, zero advantage
    rewards[1, 2] = np.nan  # one unscorable completion
    rewards[2, 1:] = np.nan  # one scorable completion left
    return {"logps": logps, "old_logps": old, "ref_logps": ref, "advantages": adv, "mask": mask,
            "entropies": entropies, "rewards": rewards.reshape(-1), "group_size": G}


class _Acc:
    device = "cpu"
    num_processes = 1

    @staticmethod
    def gather(x):
        return x

    @staticmethod
    def reduce(x, reduction="sum"):
        return x


def _loss_call(torch, loss_type: str, hp: dict, inp: dict):
    """One call of GRPOTrainer._compute_loss; returns (loss, metrics, d loss / d logps)."""
    from trl import GRPOTrainer

    b, t = inp["logps"].shape
    logps = torch.tensor(inp["logps"], requires_grad=True)
    entropies = torch.tensor(inp["entropies"])
    mask = torch.tensor(inp["mask"])
    fake = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logps, entropies, None),
        top_entropy_quantile=1.0, off_policy_mask_threshold=None,
        importance_sampling_level=hp["importance_sampling_level"], beta=hp["beta"], loss_type=loss_type,
        epsilon_low=hp["epsilon_low"], epsilon_high=hp["epsilon_high"],
        args=SimpleNamespace(use_bias_correction_kl=hp["use_bias_correction_kl"], delta=hp["delta"],
                             steps_per_generation=1),
        use_vllm=False, vllm_importance_sampling_correction=False, model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1, max_completion_length=hp["max_completion_length"],
        accelerator=_Acc(), _entropy_bonus_enabled=False, aux_loss_enabled=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
    )
    inputs = {
        "prompt_ids": torch.ones(b, 2, dtype=torch.long), "prompt_mask": torch.ones(b, 2, dtype=torch.long),
        "completion_ids": torch.ones(b, t, dtype=torch.long), "completion_mask": mask.long(),
        "advantages": torch.tensor(inp["advantages"]), "ref_per_token_logps": torch.tensor(inp["ref_logps"]),
        "num_items_in_batch": mask.sum(),
    }
    if not hp["on_policy"]:  # TRL falls back to per_token_logps.detach() when absent
        inputs["old_per_token_logps"] = torch.tensor(inp["old_logps"])
    loss = GRPOTrainer._compute_loss(fake, None, inputs)
    loss.backward()
    metrics = {k: float(v[-1]) for k, v in fake._metrics["train"].items()}
    return float(loss), metrics, logps.grad.numpy().tolist()


def _source_block(method, first: str, last: str) -> str:
    """The lines of `method`'s source from the one containing `first` to the one containing `last`."""
    lines = inspect.getsource(method).splitlines()
    i = next(n for n, line in enumerate(lines) if first in line)
    j = next(n for n, line in enumerate(lines) if n > i and last in line)
    return textwrap.dedent("\n".join(lines[i : j + 1]))


def _advantage_call(torch, kind: str, option, rewards: np.ndarray, group_size: int) -> list:
    from trl import GRPOTrainer, RLOOTrainer
    from trl.trainer.utils import nanstd

    first, last = "unscorable_mask = torch.isnan(rewards_per_func)", "advantages = torch.nan_to_num(advantages"
    if kind == "grpo":
        block = _source_block(GRPOTrainer._generate_and_score_completions, first, last)
        fake = SimpleNamespace(multi_objective_aggregation="sum_then_normalize", reward_weights=torch.ones(1),
                               scale_rewards=option)
    else:
        block = _source_block(RLOOTrainer._generate_and_score_completions, first, last)
        fake = SimpleNamespace(reward_weights=torch.ones(1), reward_clip_range=None, beta=0.0,
                               normalize_advantages=option)
    scope = {"self": fake, "torch": torch, "nanstd": nanstd, "device": "cpu", "num_generations": group_size,
             "rewards_per_func": torch.tensor(rewards)[:, None]}
    exec(block, scope)  # TRL's own lines, unchanged
    return scope["advantages"].numpy().tolist()


def compute_cases(inp: dict | None = None) -> dict:
    """Run TRL on the fixed inputs; returns the golden dict (inputs + loss and advantage cases)."""
    import torch
    import trl

    warnings.filterwarnings("ignore")
    inp = make_inputs() if inp is None else inp
    cases = []
    for loss_type, hp in LOSS_CASES:
        loss, metrics, grad = _loss_call(torch, loss_type, hp, inp)
        cases.append({"loss_type": loss_type, "hparams": hp, "loss": loss, "metrics": metrics, "grad": grad})
    adv_cases = [{"kind": kind, "option": opt,
                  "advantages": _advantage_call(torch, kind, opt, inp["rewards"], inp["group_size"])}
                 for kind, opt in ADV_CASES]
    to_list = lambda x: x.tolist() if isinstance(x, np.ndarray) else x  # noqa: E731
    return {
        "about": "TRL GRPO/RLOO goldens; regenerate with tests/golden/make_policy_goldens.py",
        "trl_version": trl.__version__, "torch_version": torch.__version__, "seed": SEED,
        "inputs": {k: to_list(v) for k, v in inp.items()},
        "cases": cases, "advantage_cases": adv_cases,
    }


def main() -> None:
    golden = compute_cases()
    # NaN rewards: JSON has no NaN literal that every reader accepts, so store them as null
    golden["inputs"]["rewards"] = [None if np.isnan(r) else r for r in golden["inputs"]["rewards"]]
    OUT.write_text(json.dumps(golden, indent=1) + "\n")
    print(f"wrote {OUT} ({len(golden['cases'])} loss cases, {len(golden['advantage_cases'])} advantage cases, "
          f"trl {golden['trl_version']})")


if __name__ == "__main__":
    main()
