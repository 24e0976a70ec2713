"""The typed config loader: YAML + dotted overrides, unknown keys, coercion."""

from __future__ import annotations

import dataclasses
from typing import Literal

import pytest

from jaxevo.config import apply_overrides, dump_config, from_dict, load_config, to_dict
from jaxevo.errors import ConfigError
from jaxevo.train.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class Inner:
    lr: float = 1e-3
    kind: Literal["a", "b"] = "a"
    size: int | None = None


@dataclasses.dataclass(frozen=True)
class Outer:
    name: str
    flag: bool = False
    shape: tuple[int, int, int] = (1, -1, 1)
    tags: tuple[str, ...] = ()
    extra: dict[str, float] = dataclasses.field(default_factory=dict)
    inner: Inner = Inner()


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: x\ninner:\n  lr: 0.5\n  kind: b\n")
    cfg = load_config(Outer, p, ["inner.lr=1e-5", "flag=yes", "shape=[2,2,2]", "tags=a,b",
                                 "extra.w=3", "inner.size=none"])
    assert cfg == Outer(name="x", flag=True, shape=(2, 2, 2), tags=("a", "b"), extra={"w": 3.0},
                        inner=Inner(lr=1e-5, kind="b", size=None))
    assert isinstance(cfg.inner.lr, float) and isinstance(cfg.extra["w"], float)
    # overrides win over the file; the file keeps the rest
    assert load_config(Outer, p, ["inner.kind=a"]).inner == Inner(lr=0.5, kind="a")


def test_type_coercion():
    cfg = from_dict(Outer, {"name": 3, "flag": "false", "shape": "1,-1,1",
                            "inner": {"lr": "2e-4", "size": "8"}})
    assert cfg.name == "3" and cfg.flag is False and cfg.shape == (1, -1, 1)
    assert cfg.inner.lr == 2e-4 and cfg.inner.size == 8
    with pytest.raises(ConfigError, match=r"inner\.lr: expected a number, got 'fast'"):
        from_dict(Outer, {"name": "x", "inner": {"lr": "fast"}})
    with pytest.raises(ConfigError, match=r"inner\.kind: 'c' is not one of \['a', 'b'\]"):
        from_dict(Outer, {"name": "x", "inner": {"kind": "c"}})
    with pytest.raises(ConfigError, match=r"shape: expected 3 values"):
        from_dict(Outer, {"name": "x", "shape": [1, 2]})
    with pytest.raises(ConfigError, match="flag: expected true/false"):
        from_dict(Outer, {"name": "x", "flag": "maybe"})
    with pytest.raises(ConfigError, match="missing required config key 'name'"):
        from_dict(Outer, {})


def test_unknown_key_names_key_and_lists_valid(tmp_path):
    with pytest.raises(ConfigError) as e:
        from_dict(Outer, {"name": "x", "inner": {"lrr": 1}})
    msg = str(e.value)
    assert "'inner.lrr'" in msg and "did you mean 'lr'" in msg and "kind, lr, size" in msg
    with pytest.raises(ConfigError, match=r"unknown config key 'optim\.learning_rate'.*lr"):
        load_config(TrainConfig, None, ["optim.learning_rate=1e-5"])
    with pytest.raises(ConfigError, match=r"unknown config key 'bogus'.*batch_size"):
        load_config(TrainConfig, None, ["bogus=1"])


def test_bad_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["no_equals_sign"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Outer, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="name.*is not a section"):
        apply_overrides({"name": "x"}, ["name.sub=1"])


def test_list_override_that_is_not_yaml_names_the_key_and_the_fix(tmp_path):
    """A regular expression in double quotes (`\\d` is no YAML escape) is a ConfigError naming the
    key, not a YAML traceback; the same list in single quotes loads as written."""
    from jaxevo.evolve.config import EvolveConfig

    cfg = tmp_path / "c.yaml"
    cfg.write_text("run: {dir: runs/x}\n")
    with pytest.raises(ConfigError, match=r"sample.stop_after: .* is not a YAML list .*single quotes"):
        load_config(EvolveConfig, cfg, ['sample.stop_after=["the answer is \\d+\\."]'])
    ok = load_config(EvolveConfig, cfg, ["sample.stop_after=['the answer is \\d+\\.']"])
    assert ok.sample.stop_after == ("the answer is \\d+\\.",)


def test_roundtrip_and_shipped_configs(tmp_path):
    cfg = load_config(TrainConfig, None, ["optim.lr=3e-6", "mesh=[1,1,-1]", "objective.hparams.label_smoothing=0.1"])
    assert cfg.optim.lr == 3e-6 and cfg.mesh == (1, 1, -1)
    assert cfg.objective.hparams == {"label_smoothing": 0.1}
    p = dump_config(cfg, tmp_path / "out.yaml")
    assert load_config(TrainConfig, p) == cfg
    assert to_dict(cfg)["optim"]["lr"] == 3e-6
    for name in ("train_sft_demo.yaml", "train_dpo_demo.yaml"):
        from pathlib import Path

        load_config(TrainConfig, Path(__file__).parents[1] / "configs" / name)


def test_train_config_checks():
    with pytest.raises(ConfigError, match="not a multiple of micro_batch_size"):
        load_config(TrainConfig, None, ["batch_size=6", "micro_batch_size=4"])
    assert load_config(TrainConfig, None, ["batch_size=8", "micro_batch_size=2"]).num_micro == 4
