"""The train step's CPU dot path (`train/cpu_dots.py`): measured once per machine and cached, the
default kept unless another path is clearly faster, set by the environment, and the same update
on either path to float rounding."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from jaxevo import cpu_store
from jaxevo.errors import ConfigError
from jaxevo.sharding import make_mesh
from jaxevo.train import cpu_dots
from jaxevo.train.config import OptimSection
from jaxevo.train.step import finalize_metrics
from tests.train.helpers import make_step, sft_records


def test_the_default_path_stays_unless_another_is_faster_by_the_margin():
    assert cpu_dots.MARGIN == 0.05
    assert cpu_dots.pick({"xla": 1.0, "ynnpack_dot": 0.96}) == "xla"  # 4 % faster: a near-tie
    assert cpu_dots.pick({"xla": 1.0, "ynnpack_dot": 0.94}) == "ynnpack_dot"
    assert cpu_dots.pick({"xla": 0.5, "ynnpack_dot": 1.0}) == "xla"


def test_measured_once_then_read_from_the_cache(cpu_store_file, monkeypatch):
    probes = []
    probe = cpu_dots.probe_seconds
    monkeypatch.setattr(cpu_dots, "probe_seconds", lambda *a: probes.append(a) or probe(*a))
    first = cpu_dots.choose(32, 64, "float32")
    (entry,) = json.loads(cpu_store_file.read_text()).values()
    assert set(entry["seconds"]) == set(cpu_dots.PATHS) and all(s > 0 for s in entry["seconds"].values())
    assert first == entry["path"] == cpu_dots.pick(entry["seconds"])
    (noted,) = cpu_store.used().values()  # what a run records of the choice
    assert noted["what"] == "train step dots (E32 F64 float32)" and noted["choice"] == first
    assert noted["source"] == "measured" and noted["measured"] == entry["measured"]
    cpu_store.forget()  # a new process: read, not measured again
    assert cpu_dots.choose(32, 64, "float32") == first and len(probes) == 1
    (noted,) = cpu_store.used().values()
    assert (noted["choice"], noted["source"], noted["measured"]) == (first, "cached", entry["measured"])
    cpu_dots.choose(32, 64, "bfloat16")  # another compute dtype is its own measurement
    assert len(probes) == 2 and len(json.loads(cpu_store_file.read_text())) == 2
    # An entry naming a path this version does not have is measured again.
    key = next(iter(json.loads(cpu_store_file.read_text())))
    cpu_store_file.write_text(json.dumps({key: {"path": "onednn"}}))
    cpu_store.forget()
    assert cpu_dots.choose(32, 64, "float32") in cpu_dots.PATHS and len(probes) == 3


def test_the_environment_sets_the_path(cpu_store_file, monkeypatch):
    monkeypatch.setenv(cpu_dots.ENV, "ynnpack_dot")
    assert cpu_dots.choose(32, 64, "bfloat16") == "ynnpack_dot"
    mesh = make_mesh((1, -1, 1))
    assert cpu_dots.compiler_options(mesh, 32, 64, "bfloat16") == cpu_dots.PATHS["ynnpack_dot"]
    monkeypatch.setenv(cpu_dots.ENV, "xla")
    assert cpu_dots.compiler_options(mesh, 32, 64, "bfloat16") is None
    assert not cpu_store_file.exists()  # nothing measured
    assert sorted((e["choice"], e["source"]) for e in cpu_store.used().values()) == [
        ("xla", "env"), ("ynnpack_dot", "env")]
    monkeypatch.setenv(cpu_dots.ENV, "onednn")
    with pytest.raises(ConfigError, match=cpu_dots.ENV):
        cpu_dots.choose(32, 64, "bfloat16")


@pytest.mark.parametrize("dtype,loss_tol,param_tol", [("float32", 1e-6, 1e-6), ("bfloat16", 1e-3, 1e-2)])
def test_either_path_gives_the_same_update(cpu_store_file, monkeypatch, dtype, loss_tol, param_tol):
    """Two SFT steps (lr 1e-2) on a tiny model with each path, from programs the option did
    change: the same losses and parameters to the paths' summation order (seen: f32 equal losses,
    parameters within 1e-7; bf16 compute, whose roundings that order can flip: losses within
    3e-5 relative, parameters within 4e-3 of updates up to 2e-2)."""
    opt = OptimSection(lr=1e-2, schedule="constant", clip_norm=None, eps=1e-3)
    out = {}
    for path in cpu_dots.PATHS:
        monkeypatch.setenv(cpu_dots.ENV, path)
        step, state, stream = make_step("sft", sft_records(16), optim=opt, dtype=dtype)
        text = step.jitted.lower(state, stream.batch(0), None, None, None).compile().as_text()
        losses = []
        for i in range(2):
            state, m = step(state, stream.batch(i))
            losses.append(finalize_metrics(jax.device_get(m))["loss"])
        out[path] = (text, losses, jax.device_get(state.params))
    (t1, l1, p1), (t2, l2, p2) = out.values()
    assert t1 != t2  # the option reached the compiler
    np.testing.assert_allclose(l2, l1, rtol=loss_tol)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=param_tol), p1, p2)
