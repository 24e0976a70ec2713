"""The model on an 8-device CPU mesh (2, 2, 2) gives the same logits as on one device, with its
sharding constraints in the compiled program."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.conftest import GOLDEN_TOKENS, GOLDEN_VALID, subprocess_env

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, sys, jax, jax.numpy as jnp, numpy as np
from jaxevo.sharding import make_mesh, use_mesh, param_shardings
from jaxevo.models.transformer import Transformer, causal_mask, positions_from_valid
from jaxevo.weights.convert import load_params
from jaxevo.weights.source import DictSource
from tests.conftest import tiny_cfg, numpy_hf_weights, GOLDEN_TOKENS, GOLDEN_VALID
assert jax.device_count() == 8
cfg = tiny_cfg(sys.argv[1])
mesh = make_mesh((2, 2, 2))
params = load_params(DictSource(numpy_hf_weights(cfg)), cfg, param_shardings(cfg, mesh))
assert params["layers"]["attn"]["q_proj"].sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
# 4 rows so the batch divides data x fsdp = 4.
rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp"), None))
tok = jax.device_put(jnp.asarray(np.concatenate([GOLDEN_TOKENS] * 2)), rows)
valid = jax.device_put(jnp.asarray(np.concatenate([GOLDEN_VALID] * 2)), rows)
with use_mesh(mesh):
    f = jax.jit(lambda p, t, v: Transformer(cfg).apply({"params": p}, t, positions_from_valid(v), causal_mask(v))[0])
    out = f(params, tok, valid)
    # The model's logical constraints (activations, gathered weights) reach the program: under the
    # legacy `with mesh:` context flax silently dropped every one of them.
    n_constraints = f.lower(params, tok, valid).as_text().count("sharding_constraint")
    assert n_constraints >= 10, n_constraints
print(json.dumps(np.asarray(out)[:2].tolist()))
"""


def test_mesh_2x2x2_equals_one_device(family):
    from jaxevo.weights.convert import load_params
    from jaxevo.weights.source import DictSource
    from tests.conftest import forward, numpy_hf_weights, tiny_cfg

    env = subprocess_env(devices=8)
    r = subprocess.run([sys.executable, "-c", SCRIPT, family], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    sharded = np.array(json.loads(r.stdout.strip().splitlines()[-1]))
    cfg = tiny_cfg(family)
    single = forward(cfg, load_params(DictSource(numpy_hf_weights(cfg)), cfg), GOLDEN_TOKENS, GOLDEN_VALID)
    assert np.abs(sharded - single)[GOLDEN_VALID.astype(bool)].max() <= 1e-5
