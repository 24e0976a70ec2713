"""Generate tests/golden/preference_losses.json by running TRL's own loss code.

    . .venv/bin/activate && pip install trl && python tests/golden/make_preference_goldens.py

TRL's code is called directly, not re-typed:

* DPO family: ``trl.DPOTrainer._compute_loss`` (TRL 1.x inlines the loss there) is called on a
  stand-in ``self`` and a stand-in model whose output carries fixed per-token log-probs, with
  ``precompute_ref_logps=True`` so the reference log-probs come from the inputs. It returns the
  batch-mean loss and logs TRL's metrics; per-example losses and rewards come from calling it once
  per example (B=1). ``aot``/``aot_unpaired`` couple the batch through a sort, so only their
  full-batch mean is recorded.
* SimPO: ``trl.experimental.cpo.CPOTrainer.cpo_loss`` (``loss_type='simpo'``), per example.
* ORPO: ``trl.experimental.orpo.ORPOTrainer.odds_ratio_loss``; TRL returns ``β·logσ(log_odds)``
  and subtracts it from the NLL, so the golden ``losses`` store its negation (jaxevo's convention).

The live test (tests/losses/test_trl_live.py) imports :func:`compute_cases` from this file.
"""

from __future__ import annotations

import json
import os
import warnings
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np

B = 8
SEED = 0
OUT = Path(__file__).with_name("preference_losses.json")

# (loss_type, hparams) cases; hparams use TRL's names.
DPO_CASES = [
    ("sigmoid", {"beta": 0.1}),
    ("sigmoid", {"beta": 0.5}),
    ("hinge", {"beta": 0.1}),
    ("hinge", {"beta": 0.5}),
    ("ipo", {"beta": 0.1}),
    ("ipo", {"beta": 0.5}),
    ("sigmoid_norm", {"beta": 0.1}),
    ("robust", {"beta": 0.1, "label_smoothing": 0.0}),
    ("robust", {"beta": 0.1, "label_smoothing": 0.1}),
    ("robust", {"beta": 0.5, "label_smoothing": 0.3}),
    ("exo_pair", {"beta": 0.1, "label_smoothing": 1e-3}),
    ("exo_pair", {"beta": 0.5, "label_smoothing": 0.1}),
    ("nca_pair", {"beta": 0.1}),
    ("bco_pair", {"beta": 0.1}),
    ("sppo_hard", {"beta": 0.5}),
    ("aot", {"beta": 0.1, "label_smoothing": 0.0}),
    ("aot", {"beta": 0.5, "label_smoothing": 0.1}),
    ("aot_unpaired", {"beta": 0.1, "label_smoothing": 0.1}),
    ("apo_zero", {"beta": 0.1}),
    ("apo_down", {"beta": 0.1}),
    ("discopop", {"beta": 0.1, "discopop_tau": 0.05}),
    ("discopop", {"beta": 0.5, "discopop_tau": 0.2}),
]
SIMPO_CASES = [
    {"beta": 0.1, "simpo_gamma": 0.5, "label_smoothing": 0.0},
    {"beta": 2.0, "simpo_gamma": 0.5, "label_smoothing": 0.0},
    {"beta": 2.5, "simpo_gamma": 1.0, "label_smoothing": 0.1},
]
ORPO_CASES = [{"beta": 0.1}, {"beta": 0.5}]
BATCH_COUPLED = {"aot", "aot_unpaired"}


def make_inputs(b: int = B, seed: int = SEED) -> dict:
    """Fixed random pairs: per-token log-probs, lengths, summed policy and reference log-probs."""
    rng = np.random.default_rng(seed)
    t = 48  # completion positions per sequence (after the shift)
    prompt = 4
    lengths = rng.integers(5, t - prompt, size=2 * b)  # [chosen..., rejected...]
    per_tok = -rng.uniform(0.05, 2.5, size=(2 * b, t)).astype(np.float32)
    shift_mask = np.zeros((2 * b, t), np.float32)
    for i, n in enumerate(lengths):
        shift_mask[i, prompt - 1 : prompt - 1 + n] = 1.0  # completion starts after the prompt
    per_tok = per_tok * shift_mask
    sums = per_tok.sum(axis=1, dtype=np.float32)  # recomputed in torch below
    ref = (sums + rng.normal(0.0, 3.0, size=2 * b)).astype(np.float32)
    return {
        "per_token_logps": per_tok,
        "shift_mask": shift_mask,
        "lengths": lengths.astype(np.int64),
        "ref": ref,
        "prompt": prompt,
    }


class _Acc:
    device = "cpu"

    @staticmethod
    def gather(x):
        return x

    gather_for_metrics = gather


def _fake_dpo_self(loss_type: str, hp: dict):
    return SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=_Acc(),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=[loss_type],
        loss_weights=[1.0],
        beta=hp["beta"],
        label_smoothing=hp.get("label_smoothing", 0.0),
        args=SimpleNamespace(discopop_tau=hp.get("discopop_tau", 0.05)),
        use_weighting=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )


def _dpo_call(torch, loss_type, hp, per_tok, shift_mask, ref_c, ref_r):
    """One call of DPOTrainer._compute_loss on rows [chosen..., rejected...]."""
    from trl import DPOTrainer

    n2, t = per_tok.shape
    log_probs = torch.tensor(per_tok)

    def model(**kw):
        return SimpleNamespace(
            log_probs=log_probs,
            entropy=torch.zeros(n2, t),
            mean_logits=torch.zeros(n2, t),
            is_top1=torch.zeros(n2, t, dtype=torch.bool),
        )

    completion_mask = torch.zeros(n2, t + 1, dtype=torch.long)
    completion_mask[:, 1:] = torch.tensor(shift_mask, dtype=torch.long)
    inputs = {
        "input_ids": torch.ones(n2, t + 1, dtype=torch.long),
        "attention_mask": torch.ones(n2, t + 1, dtype=torch.long),
        "completion_mask": completion_mask,
        "ref_chosen_logps": torch.tensor(ref_c),
        "ref_rejected_logps": torch.tensor(ref_r),
    }
    fake = _fake_dpo_self(loss_type, hp)
    loss = DPOTrainer._compute_loss(fake, model, inputs, False)
    metrics = {k: v[-1] for k, v in fake._metrics["train"].items() if "/" in k}
    return float(loss), metrics


def compute_cases(inp: dict | None = None) -> dict:
    """Run TRL on the fixed inputs; returns the golden dict (inputs + cases)."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import torch
    import trl
    from trl.experimental.cpo import CPOTrainer
    from trl.experimental.orpo import ORPOTrainer

    warnings.filterwarnings("ignore")
    inp = make_inputs() if inp is None else inp
    per_tok, shift_mask, lengths = inp["per_token_logps"], inp["shift_mask"], inp["lengths"]
    b = per_tok.shape[0] // 2
    sums = torch.tensor(per_tok).sum(dim=1).numpy()  # exactly TRL's `per_token_logps.sum(dim=1)`
    ref = inp["ref"]
    c, r, rc, rr = sums[:b], sums[b:], ref[:b], ref[b:]
    lc, lr = lengths[:b], lengths[b:]
    assert np.array_equal(shift_mask.sum(1).astype(np.int64), lengths)

    cases = []
    for loss_type, hp in DPO_CASES:
        mean, metrics = _dpo_call(torch, loss_type, hp, per_tok, shift_mask, rc, rr)
        case = {"loss_type": loss_type, "hparams": hp, "trl": "DPOTrainer._compute_loss",
                "lengths_used": loss_type in ("ipo", "sigmoid_norm"),
                "loss_mean": mean, "metrics": metrics}
        if loss_type not in BATCH_COUPLED:
            losses, crew, rrew = [], [], []
            for i in range(b):
                rows = [i, b + i]
                li, mi = _dpo_call(torch, loss_type, hp, per_tok[rows], shift_mask[rows], rc[i:i + 1], rr[i:i + 1])
                losses.append(li)
                crew.append(mi["rewards/chosen"])
                rrew.append(mi["rewards/rejected"])
            case.update(losses=losses, chosen_rewards=crew, rejected_rewards=rrew)
        cases.append(case)

    avg = lambda s, n: (torch.tensor(s) / torch.tensor(n).float())  # noqa: E731  get_batch_logps(average_log_prob=True)
    for hp in SIMPO_CASES:
        fake = SimpleNamespace(alpha=0.0, accelerator=_Acc(), loss_type="simpo", beta=hp["beta"],
                               simpo_gamma=hp["simpo_gamma"], label_smoothing=hp["label_smoothing"])
        losses, crew, rrew = CPOTrainer.cpo_loss(fake, avg(c, lc), avg(r, lr))
        cases.append({"loss_type": "simpo", "hparams": hp, "trl": "CPOTrainer.cpo_loss", "lengths_used": True,
                      "losses": losses.tolist(), "loss_mean": float(losses.mean()),
                      "chosen_rewards": crew.tolist(), "rejected_rewards": rrew.tolist()})
    for hp in ORPO_CASES:
        fake = SimpleNamespace(accelerator=_Acc(), beta=hp["beta"])
        ratio_losses, crew, rrew, _, _ = ORPOTrainer.odds_ratio_loss(fake, avg(c, lc), avg(r, lr))
        losses = -ratio_losses  # TRL: loss = nll - mean(beta * logsigmoid(log_odds))
        cases.append({"loss_type": "orpo", "hparams": hp, "trl": "ORPOTrainer.odds_ratio_loss (negated)",
                      "lengths_used": True, "losses": losses.tolist(), "loss_mean": float(losses.mean()),
                      "chosen_rewards": crew.tolist(), "rejected_rewards": rrew.tolist()})

    return {
        "about": "TRL preference-loss goldens; regenerate with tests/golden/make_preference_goldens.py",
        "trl_version": trl.__version__,
        "torch_version": torch.__version__,
        "B": b,
        "seed": SEED,
        "inputs": {
            "chosen_logps": c.tolist(), "rejected_logps": r.tolist(),
            "ref_chosen_logps": rc.tolist(), "ref_rejected_logps": rr.tolist(),
            "chosen_lengths": lc.tolist(), "rejected_lengths": lr.tolist(),
        },
        "cases": cases,
    }


def main() -> None:
    golden = compute_cases()
    OUT.write_text(json.dumps(golden, indent=1) + "\n")
    print(f"wrote {OUT} ({len(golden['cases'])} cases, trl {golden['trl_version']})")


if __name__ == "__main__":
    main()
