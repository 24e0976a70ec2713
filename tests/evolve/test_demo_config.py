"""The README's demo config (configs/grpo_quick.yaml) is configs/grpo.yaml's recipe with exactly the
cuts its header names, so the 3-round results in docs/results.md stay its reference; and
scripts/demo.sh runs it, with the control arm on the same config and budget."""

import re
from pathlib import Path

import yaml

from jaxevo.config import load_config, to_dict
from jaxevo.data.answers import extract_answer
from jaxevo.evolve.config import EvolveConfig

ROOT = Path(__file__).resolve().parents[2]


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k not in ("rewards", "source", "unseen_source"):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _load(name):
    return _flat(to_dict(load_config(EvolveConfig, ROOT / "configs" / f"{name}.yaml", [])))


def test_quick_demo_changes_only_what_it_says():
    base, quick = _load("grpo"), _load("grpo_quick")
    diff = {k: quick[k] for k in quick if quick[k] != base.get(k)}
    stop = r"(?i)the answer is [^\n]*?\d\.(?=\s)"
    assert diff == {
        "run.dir": "runs/grpo_quick", "run.rounds": 1, "prompts.per_round": 120,
        "sample.max_new_tokens": 96, "sample.batch_size": 96, "grpo.steps": 10, "grpo.prompts_per_step": 4,
        "grpo.dynamic_sampling": True, "grpo.checkpoint_every": 5,
        "grpo.train.optim.lr": 2.0e-5, "eval.stop_after": [stop],
        "grpo.share_prompt": 4, "eval.batch_size": 150}
    # no prompt is drawn twice in a round: steps x prompts per draw x draws
    assert quick["prompts.per_round"] == quick["grpo.steps"] * quick["grpo.prompts_per_step"] * quick["grpo.max_draws"]


def test_eval_stop_keeps_the_answer_the_checker_reads():
    """The evaluation's stop ends a greedy answer right after the first "The answer is N." the
    checker reads (first strict answer), so a stopped text yields the same verdict."""
    stop = re.compile(yaml.safe_load((ROOT / "configs/grpo_quick.yaml").read_text())["eval"]["stop_after"][0])
    text = "3 + 4 = 7 apples.\nThe answer is 7. \n\nQuestion: Tom has 2 pens. The answer is 9."
    m = stop.search(text)
    assert m is not None and text[:m.end()] == "3 + 4 = 7 apples.\nThe answer is 7."
    assert extract_answer(text[:m.end()]) == extract_answer(text) == "7"
    assert stop.search("The answer is 3.5 kg") is None  # a decimal point is not the end


def test_demo_script_runs_the_quick_config_for_both_arms():
    script = (ROOT / "scripts/demo.sh").read_text()
    assert "${DEMO_CONFIG:-configs/grpo_quick.yaml}" in script
    runs = [line for line in script.splitlines() if line.startswith("jaxevo evolve")]
    assert len(runs) == 2 and all('--config "$cfg"' in line for line in runs)
    assert "format_only: 1.0" in runs[1] and "run.rounds" not in runs[1]  # the control: same budget
