"""Regenerate tests/golden/tiny_logits.npz from transformers (needs torch):

    python tests/golden/make_model_goldens.py
"""

import sys
from pathlib import Path

import numpy as np
import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.conftest import GOLDEN_TOKENS, GOLDEN_VALID, TINY_HF, numpy_hf_weights, tiny_cfg  # noqa: E402

out = {}
for family, hf in sorted(TINY_HF.items()):
    config = transformers.AutoConfig.for_model(**hf)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    sd = {k: torch.tensor(v) for k, v in numpy_hf_weights(tiny_cfg(family)).items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and all("lm_head" in m for m in missing), (missing, unexpected)
    with torch.no_grad():
        out[family] = model(torch.tensor(GOLDEN_TOKENS, dtype=torch.long),
                            attention_mask=torch.tensor(GOLDEN_VALID)).logits.numpy()
np.savez_compressed(Path(__file__).with_name("tiny_logits.npz"), **out,
                    transformers_version=np.array(transformers.__version__))
print("wrote", {k: v.shape for k, v in out.items()})
