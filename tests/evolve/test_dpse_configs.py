"""The DPSE ablation configs differ from configs/dpse.yaml in exactly the one setting each ablates
(plus its run folder; the token-frequency reading replaces the pair weights, so it turns those
off too), so the ablation table compares like with like."""

from pathlib import Path

import pytest

from jaxevo.config import load_config, to_dict
from jaxevo.errors import ConfigError
from jaxevo.evolve.config import EvolveConfig

ROOT = Path(__file__).resolve().parents[2]


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k not in ("weights",):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _load(path):
    return _flat(to_dict(load_config(EvolveConfig, path, [])))


ABLATIONS = [
    ("verifier", {"censor.quality": "verifier", "censor.weights": {"quality": 1.0}}),
    ("alpha0", {"censor.topic_alpha": 0.0}),
    ("no_expansion", {"censor.expand_topics": 0, "censor.expand_variants": 0}),
    ("token_frequency", {"censor.topic_alpha": 0.0, "preference.objective.token_alpha": 0.5}),
]


@pytest.mark.parametrize("name, changed", ABLATIONS)
def test_each_ablation_changes_one_thing(name, changed):
    base = _load(ROOT / "configs" / "dpse.yaml")
    abl = _load(ROOT / "configs" / "dpse_ablations" / f"{name}.yaml")
    diff = {k: abl[k] for k in abl if abl[k] != base.get(k)}
    assert diff == {**changed, "run.dir": f"runs/dpse_{name}"}


def test_ablations_are_all_tested():
    shipped = {p.stem for p in (ROOT / "configs" / "dpse_ablations").glob("*.yaml")}
    assert shipped == {name for name, _ in ABLATIONS}


def test_dpse_uses_logs_with_history_and_generative_expansion():
    cfg = load_config(EvolveConfig, ROOT / "configs" / "dpse.yaml", [])
    assert cfg.prompts.source["type"] == "simulated_logs" and cfg.prompts.source["history"] == "user"
    assert cfg.eval.source["history"] == "user"
    assert {"logged", "expand"} <= set(cfg.stages)
    assert cfg.stages.index("logged") < cfg.stages.index("score") < cfg.stages.index("expand") < cfg.stages.index("data")
    with pytest.raises(ConfigError, match="no `expand` stage"):
        load_config(EvolveConfig, ROOT / "configs" / "dpse.yaml", ["stages=[prompts,generate,score,data]"])
