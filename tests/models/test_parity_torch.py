"""Parity with transformers PyTorch models (needs torch: `pip install torch==2.13.0`).

Both directions on random tiny configs of every family: a transformers model saved with
`save_pretrained` loads into jaxevo with the same logits (f32, max |d| <= 1e-4), and a jaxevo
export loads into transformers with the same logits.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from jaxevo.models.config import ModelConfig  # noqa: E402
from jaxevo.weights.convert import load_params  # noqa: E402
from jaxevo.weights.hf import HFDirSource, export_hf  # noqa: E402
from tests.conftest import GOLDEN_TOKENS, GOLDEN_VALID, TINY_HF, forward, random_params, tiny_cfg  # noqa: E402


def _hf_logits(model, tokens, valid):
    with torch.no_grad():
        return model(torch.tensor(tokens, dtype=torch.long), attention_mask=torch.tensor(valid)).logits.numpy()


def test_import_from_save_pretrained(family, tmp_path):
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(**TINY_HF[family])
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # non-trivial norms and biases so their mapping is exercised
        for n, p in model.named_parameters():
            if "norm" in n or "bias" in n:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(tmp_path)
    cfg = ModelConfig.from_hf(tmp_path)
    ours = forward(cfg, load_params(HFDirSource(tmp_path), cfg), GOLDEN_TOKENS, GOLDEN_VALID)
    ref = _hf_logits(model, GOLDEN_TOKENS, GOLDEN_VALID)
    mask = GOLDEN_VALID.astype(bool)
    assert np.abs(ours - ref)[mask].max() <= 1e-4
    assert (ours.argmax(-1) == ref.argmax(-1))[mask].all()


def test_sharded_checkpoint_with_index(tmp_path):
    cfg = tiny_cfg("llama3")
    params = random_params(cfg)
    export_hf(params, cfg, tmp_path, max_shard_bytes=40_000)  # forces several shards + index
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 2
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ours = forward(cfg, load_params(HFDirSource(tmp_path), cfg), GOLDEN_TOKENS)
    np.testing.assert_allclose(ours, _hf_logits(model, GOLDEN_TOKENS, np.ones_like(GOLDEN_TOKENS)), atol=1e-4)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_export_round_trip(family, tmp_path, dtype):
    cfg = tiny_cfg(family)
    params = random_params(cfg)
    export_hf(params, cfg, tmp_path, dtype=dtype)
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    ref = _hf_logits(model, GOLDEN_TOKENS, GOLDEN_VALID)
    if dtype == "bfloat16":  # the file holds bf16-rounded weights: compare with those, in f32
        params = jax.tree.map(lambda x: x.astype(jnp.bfloat16).astype(jnp.float32), params)
    ours = forward(cfg, params, GOLDEN_TOKENS, GOLDEN_VALID)
    mask = GOLDEN_VALID.astype(bool)
    assert np.abs(ours - ref)[mask].max() <= 1e-4


# Each feature a tiny family exercises, switched off: the logits must move by ten times the 1e-4
# the parity tests allow, so matching transformers proves the feature is computed, not skipped.
FEATURES = {
    "mistral-sw": {"sliding_window": None},
    "llama32": {"rope_scaling": None},
    "qwen3": {"qk_norm": False},
    "gemma3": {"sliding_window": None, "rope_local_theta": 1000000.0, "final_logit_softcap": None,
               "query_pre_attn_scalar": None, "norm_unit_offset": False, "scale_embeddings": False,
               "hidden_act": "silu", "rope_scaling": None},
    "phi3": {"rope_scaling": None, "sliding_window": None},
}


@pytest.mark.parametrize("family", sorted(FEATURES))
def test_each_feature_moves_the_logits(family):
    cfg = tiny_cfg(family)
    params = random_params(cfg)
    base = forward(cfg, params, GOLDEN_TOKENS, GOLDEN_VALID)
    mask = GOLDEN_VALID.astype(bool)
    for key, off in FEATURES[family].items():
        moved = np.abs(forward(cfg.replace(**{key: off}), params, GOLDEN_TOKENS, GOLDEN_VALID) - base)[mask].max()
        assert moved > 1e-3, (key, moved)
