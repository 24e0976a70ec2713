"""A reward model on an 8-device CPU mesh (2, 2, 2): weights sharded as a policy's, rows over the
data axes; the same scores as on one device."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from jaxevo.judging.reward_model import RewardModel, export_reward_hf
from tests.conftest import random_params, subprocess_env, tiny_cfg
from tests.sampling.helpers import PAD, byte_tokenizer

ROOT = Path(__file__).resolve().parents[2]
SEQS = [list(np.random.RandomState(i).randint(0, 256, size=n)) for i, n in enumerate([5, 1, 17, 9, 30, 2, 12])]

SCRIPT = """
import json, sys, jax
from jaxevo.judging.reward_model import RewardModel
from jaxevo.sharding import make_mesh
assert jax.device_count() == 8
rm = RewardModel.load(sys.argv[1], dtype="float32", mesh=make_mesh((2, 2, 2)), max_batch=8)
spec = rm.params["decoder"]["layers"]["attn"]["q_proj"].sharding.spec
assert spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None), spec
print(json.dumps(rm.score_ids(json.loads(sys.argv[2]))))
"""


def test_mesh_2x2x2_scores_equal_one_device(tmp_path):
    cfg = tiny_cfg("qwen2").replace(vocab_size=260, tie_word_embeddings=True, pad_token_id=PAD)
    params = {"decoder": random_params(cfg),
              "score": jnp.asarray(np.random.RandomState(2).randn(cfg.hidden_size, 1).astype(np.float32))}
    d = export_reward_hf(params, cfg, tmp_path / "rm", byte_tokenizer())
    seqs = [[int(t) for t in s] for s in SEQS]
    env = subprocess_env(devices=8)
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(d), json.dumps(seqs)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    sharded = np.array(json.loads(r.stdout.strip().splitlines()[-1]))
    single = np.array(RewardModel.load(str(d), dtype="float32").score_ids(seqs))
    assert np.abs(sharded - single).max() <= 1e-5 and np.std(single) > 1e-2
