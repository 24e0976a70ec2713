"""LoRA adapters: config, zero-init identity, and exports that transformers / peft load with
jaxevo's logits (tiny random models, fp32)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from jaxevo.config import load_config
from jaxevo.errors import ConfigError, WeightsError
from jaxevo.lora import LoraSection, init_adapters, merge, num_adapter_params
from jaxevo.lora.adapters import adapter_specs
from jaxevo.lora.peft import read_peft, write_peft
from jaxevo.train.config import TrainConfig
from jaxevo.weights.hf import export_hf
from tests.conftest import forward, random_params, tiny_cfg

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")


def _random_adapters(lcfg, cfg, seed=1):
    """Adapters with a non-zero B (a trained adapter), so the merge actually changes weights."""
    rng = np.random.RandomState(seed)
    return {t: {k: rng.normal(0, 0.05, shape).astype(np.float32) for k, (shape, _) in ab.items()}
            for t, ab in adapter_specs(lcfg, cfg).items()}


def test_config_section_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lora:\n  rank: 8\n  alpha: 16\n  targets: [q_proj, v]\n")
    cfg = load_config(TrainConfig, path, ["lora.rank=16", "lora.rslora=true"])
    assert cfg.lora.rank == 16 and cfg.lora.rslora and cfg.lora.target_names == ("q", "v")
    assert cfg.lora.scale == pytest.approx(16 / 4)  # alpha / sqrt(r)
    assert not TrainConfig().lora.enabled  # rank 0 by default: full fine-tuning
    with pytest.raises(ConfigError, match="unknown projection 'qq'"):
        load_config(TrainConfig, path, ["lora.targets=qq"])
    assert load_config(TrainConfig, path, ["lora.dropout=0.1"]).lora.dropout == 0.1
    with pytest.raises(ConfigError, match="lora.dropout=1.0 must be in"):
        load_config(TrainConfig, path, ["lora.dropout=1.0"])
    with pytest.raises(ConfigError, match="lora.quantize_base='int4': choose int8, nf4"):
        load_config(TrainConfig, path, ["lora.quantize_base=int4"])
    with pytest.raises(ConfigError, match="lora.rank=-1"):
        LoraSection(rank=-1)


@pytest.mark.parametrize("family", ["llama3", "qwen2"])
def test_zero_init_forward_equals_base(family):
    cfg = tiny_cfg(family)
    params = random_params(cfg)
    lcfg = LoraSection(rank=4, alpha=8)
    ad = init_adapters(lcfg, cfg, jax.random.key(0))
    assert all(np.abs(np.asarray(ab["lora_a"])).max() > 0 and not np.asarray(ab["lora_b"]).any()
               for ab in ad.values())
    merged = merge(params, ad, lcfg)
    jax.tree.map(np.testing.assert_array_equal, params, merged)  # bit for bit
    toks = np.arange(12, dtype=np.int32)[None] % cfg.vocab_size
    np.testing.assert_array_equal(forward(cfg, merged, toks), forward(cfg, params, toks))
    # 7 targets x 2 layers: q/k/v/o/gate/up/down adapter sizes by hand (E=64, H*D=64, K*D=32, F=96)
    per_layer = 4 * ((64 + 64) + (64 + 32) * 2 + (64 + 64) + (64 + 96) * 2 + (96 + 64))
    assert num_adapter_params(lcfg, cfg) == 2 * per_layer


@pytest.mark.parametrize("family,rslora", [("llama3", False), ("qwen2", True)])
def test_merged_and_peft_exports_match_transformers(tmp_path, family, rslora):
    """Merged HF export == jaxevo's merged logits; PEFT adapter on the HF base == the same."""
    cfg = tiny_cfg(family)
    params = random_params(cfg)
    lcfg = LoraSection(rank=4, alpha=8, targets=("q", "k", "v", "o", "gate", "up", "down"),
                       rslora=rslora)
    ad = _random_adapters(lcfg, cfg)
    merged = merge(params, ad, lcfg)
    toks = (np.arange(20, dtype=np.int32)[None] * 7) % cfg.vocab_size
    ours = forward(cfg, merged, toks)
    assert np.abs(ours - forward(cfg, params, toks)).max() > 1e-2  # the adapters matter

    export_hf(merged, cfg, tmp_path / "merged")
    export_hf(params, cfg, tmp_path / "base")
    write_peft(ad, lcfg, cfg, tmp_path / "adapter")
    conf = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert conf["r"] == 4 and conf["use_rslora"] is rslora and "q_proj" in conf["target_modules"]
    t_in = torch.tensor(toks, dtype=torch.long)
    with torch.no_grad():
        m = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged",
                                                              dtype=torch.float32).eval()
        np.testing.assert_allclose(m(t_in).logits.numpy(), ours, rtol=0, atol=1e-4)
        base = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "base",
                                                                 dtype=torch.float32).eval()
        pm = peft.PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
        np.testing.assert_allclose(pm(t_in).logits.numpy(), ours, rtol=0, atol=1e-4)


def test_peft_import_round_trip(tmp_path):
    cfg = tiny_cfg("llama3")
    lcfg = LoraSection(rank=3, alpha=5, targets=("v", "o", "down"))
    ad = _random_adapters(lcfg, cfg)
    write_peft(ad, lcfg, cfg, tmp_path / "a")
    lcfg2, ad2 = read_peft(tmp_path / "a", cfg)
    assert (lcfg2.rank, lcfg2.alpha, lcfg2.target_names) == (3, 5.0, ("v", "o", "down"))
    jax.tree.map(np.testing.assert_array_equal, ad, ad2)
    conf = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps(dict(conf, use_dora=True)))
    with pytest.raises(WeightsError, match="use_dora"):
        read_peft(tmp_path / "a", cfg)
