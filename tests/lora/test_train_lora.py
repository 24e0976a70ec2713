"""Training with LoRA: SFT and DPO learn on a tiny model, only the adapters train (the base stays
bit for bit), the reference is the base itself, resume is exact, the export is merged + PEFT."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest

from jaxevo.cli import main
from jaxevo.config import load_config
from jaxevo.errors import ConfigError
from jaxevo.lora import merge
from jaxevo.lora.peft import write_peft
from jaxevo.lora.adapters import abstract_adapters
from jaxevo.train import TrainConfig, train
from jaxevo.train.builder import build
from jaxevo.train.step import finalize_metrics, fetch, to_global
from jaxevo.weights.load import load_pretrained
from tests.train.helpers import pref_records, pretrained, sft_records

TARGETS = ("q", "k", "v", "o", "gate", "up", "down")


def lora_config(out_dir, *extra) -> TrainConfig:
    return load_config(TrainConfig, None, [
        f"out_dir={out_dir}", "batch_size=8", "seed=0", "data.chat_template=false",
        "data.pad_to_multiple=8", "data.max_length=32", "optim.schedule=constant",
        "optim.clip_norm=null", "lora.rank=8", "lora.alpha=16", "checkpoint.export=false",
        "log.progress=false", "log.tensorboard=false", *extra])


def frozen_base():
    """The tiny random Llama with its output head scaled up 30x. A random head of std 0.02 caps
    the logits after the final RMSNorm near 0 (SFT loss stuck near log V = 4.85 whatever the
    adapters do); a pretrained model's head is not like that, this one is neither."""
    pre = pretrained(0, dtype="float32")
    return dataclasses.replace(pre, params=dict(pre.params, lm_head=pre.params["lm_head"] * 30))


def _host(tree):
    return jax.tree.map(lambda x: np.array(x, copy=True), jax.device_get(tree))


def _run(t, n):
    state, hist = t.state, []
    for s in range(n):
        state, raw = t.step(state, to_global(t.stream.batch(s), t.mesh))
        hist.append(finalize_metrics(fetch(raw)))
    return state, hist


def _check_only_adapters(t, state, base_before):
    """The state is the adapters (+ their Adam moments); the base is bit for bit as loaded."""
    want = jax.tree.structure(abstract_adapters(t.cfg.lora, t.model_cfg))
    assert jax.tree.structure(state.params) == want
    n_adapter = sum(x.size for x in jax.tree.leaves(state.params))
    n_opt = sum(x.size for x in jax.tree.leaves(state.opt_state) if x.ndim)
    assert n_opt == 2 * n_adapter  # Adam's mu and nu of the adapters, nothing for the base
    jax.tree.map(np.testing.assert_array_equal, base_before, jax.device_get(t.base))


def test_lora_sft_learns_with_frozen_base(tmp_path):
    pre = frozen_base()
    base_before = _host(pre.params)
    t = build(lora_config(tmp_path, "steps=80", "optim.lr=1e-2"), pretrained=pre,
              records=sft_records(8))
    state, hist = _run(t, 80)
    losses = [h["loss"] for h in hist]
    assert losses[0] > 5.0 and min(losses[-5:]) < 0.05, losses[::10]  # measured: 9.67 -> 0.0045
    _check_only_adapters(t, state, base_before)
    # merged: the adapted projections moved, every other weight is the base's
    merged = jax.device_get(merge(t.base, state.params, t.cfg.lora))
    for k in ("embedding", "lm_head", "final_norm"):
        jax.tree.map(np.testing.assert_array_equal, merged[k], base_before[k])
    for sub in ("attn_norm", "mlp_norm"):
        np.testing.assert_array_equal(merged["layers"][sub]["scale"],
                                      base_before["layers"][sub]["scale"])
    assert np.abs(merged["layers"]["attn"]["q_proj"] - base_before["layers"]["attn"]["q_proj"]).max() > 1e-3


@pytest.mark.parametrize("precompute_ref", [True, False])
def test_lora_dpo_learns_reference_is_the_base(tmp_path, precompute_ref):
    pre = frozen_base()
    base_before = _host(pre.params)
    t = build(lora_config(tmp_path, "steps=30", "optim.lr=1e-2", "objective.name=preference",
                          "objective.beta=0.1", f"objective.precompute_ref={precompute_ref}"),
              pretrained=pre, records=pref_records(8))
    if not precompute_ref:  # the per-step reference forward reads the base arrays themselves
        ref = t.step.keywords["ref_params"]  # partial(step, ref_params=, base_params=)
        assert all(a is b for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(t.base)))
    state, hist = _run(t, 30)
    assert hist[0]["loss"] == pytest.approx(np.log(2), abs=1e-5)  # B = 0: policy == reference
    assert abs(hist[0]["rewards/margins"]) < 1e-5
    assert hist[-1]["rewards/accuracies"] == 1.0 and hist[-1]["rewards/margins"] > 1.0, \
        [(h["loss"], h["rewards/margins"]) for h in hist[::5]]
    assert hist[-1]["loss"] < 0.3
    _check_only_adapters(t, state, base_before)


def test_lora_resume_exact_and_export(tmp_path, capsys):
    """6 steps straight == 3 steps + resume (adapters and Adam state bitwise); checkpoints hold
    the adapters only; the export is the merged model plus a PEFT adapter."""
    args = ("steps=6", "optim.lr=1e-2", "optim.warmup_steps=2", "optim.weight_decay=0.01",
            "micro_batch_size=4", "checkpoint.export=true")
    full = train(lora_config(tmp_path / "a", *args), pretrained=pretrained(0, dtype="float32"),
                 records=sft_records(12))
    cfg_b = lora_config(tmp_path / "b", *args)
    part = train(cfg_b, pretrained=pretrained(0, dtype="float32"), records=sft_records(12), stop_at=3)
    assert part.steps == 3 and part.export_dir is None
    rest = train(cfg_b, pretrained=pretrained(0, dtype="float32"), records=sft_records(12))
    assert rest.steps == 6 and len(rest.history) == 3
    jax.tree.map(np.testing.assert_array_equal, _host(full.state.params), _host(rest.state.params))
    jax.tree.map(np.testing.assert_array_equal, _host(full.state.opt_state),
                 _host(rest.state.opt_state))
    np.testing.assert_array_equal([h["loss"] for h in full.history[3:]],
                                  [h["loss"] for h in rest.history])
    # the checkpoint's params subtree is the adapters' (no base weights saved)
    tree = json.loads((tmp_path / "b" / "checkpoints" / "6" / "state" / "_METADATA").read_text())
    params = {k for k in tree["tree_metadata"] if k.startswith("('params'")}
    assert params == {f"('params', '{t}', '{m}')" for t in TARGETS for m in ("lora_a", "lora_b")}
    # export: merged weights in final/model, the adapter in PEFT format in final/adapter
    exp = rest.export_dir
    assert (exp / "adapter" / "adapter_config.json").is_file()
    assert (exp / "adapter" / "adapter_model.safetensors").is_file()
    loaded = load_pretrained(exp, dtype="float32")
    want = jax.device_get(merge(pretrained(0, dtype="float32").params, rest.state.params,
                                cfg_b.lora))
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(loaded.params), want)
    # the CLI: `jaxevo export --model OUT_DIR` (merged) and `--peft` (the adapter files)
    assert main(["export", "--model", str(tmp_path / "b"), "--out", str(tmp_path / "m")]) == 0
    jax.tree.map(np.testing.assert_array_equal,
                 jax.device_get(load_pretrained(tmp_path / "m", dtype="float32").params), want)
    assert main(["export", "--model", str(tmp_path / "b"), "--out", str(tmp_path / "p"),
                 "--peft"]) == 0
    for f in ("adapter_config.json", "adapter_model.safetensors"):
        assert (tmp_path / "p" / f).read_bytes() == (exp / "adapter" / f).read_bytes()
    capsys.readouterr()
    assert main(["export", "--model", str(exp / "model"), "--out", str(tmp_path / "q"),
                 "--peft"]) == 2
    assert "no LoRA adapter" in capsys.readouterr().err


def test_start_from_a_peft_adapter(tmp_path):
    """lora.init_from: a PEFT adapter becomes the starting state (and a mismatch is refused)."""
    pre = pretrained(0, dtype="float32")
    cfg = lora_config(tmp_path / "a", "steps=1")
    rng = np.random.RandomState(3)
    ad = jax.tree.map(lambda s: rng.normal(0, 0.05, s.shape).astype(np.float32),
                      abstract_adapters(cfg.lora, pre.cfg))
    write_peft(ad, cfg.lora, pre.cfg, tmp_path / "peft")
    t = build(lora_config(tmp_path / "b", "steps=1", f"lora.init_from={tmp_path / 'peft'}"),
              pretrained=pre, records=sft_records(8))
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(t.state.params), ad)
    with pytest.raises(ConfigError, match="the adapter has rank=8"):
        build(lora_config(tmp_path / "c", "steps=1", "lora.rank=4",
                          f"lora.init_from={tmp_path / 'peft'}"),
              pretrained=pretrained(0, dtype="float32"), records=sft_records(8))


def test_lora_dropout_trains_reproducibly_and_resumes_exactly(tmp_path):
    """lora.dropout > 0: keyed by the step's RNG and the micro-batch, so two runs agree bit for
    bit and 4 steps straight == 2 + resume; and the dropout changes the training."""
    args = ("steps=4", "optim.lr=1e-2", "micro_batch_size=4", "lora.dropout=0.2")
    full = train(lora_config(tmp_path / "a", *args), pretrained=pretrained(0, dtype="float32"),
                 records=sft_records(12))
    cfg_b = lora_config(tmp_path / "b", *args)
    train(cfg_b, pretrained=pretrained(0, dtype="float32"), records=sft_records(12), stop_at=2)
    rest = train(cfg_b, pretrained=pretrained(0, dtype="float32"), records=sft_records(12))
    jax.tree.map(np.testing.assert_array_equal, _host(full.state.params), _host(rest.state.params))
    np.testing.assert_array_equal([h["loss"] for h in full.history[2:]],
                                  [h["loss"] for h in rest.history])
    plain = train(lora_config(tmp_path / "c", *args[:-1]), pretrained=pretrained(0, dtype="float32"),
                  records=sft_records(12))
    assert full.history[0]["loss"] == plain.history[0]["loss"]  # B = 0: dropout cannot show yet
    assert full.history[-1]["loss"] != plain.history[-1]["loss"]
