"""Same seed => same completions on one device and on an 8-device CPU mesh (in a subprocess),
batch at a time (the cache buffer growing in two segments) and with continuous batching."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxevo.sampling import Sampler, SamplingParams
from tests.conftest import subprocess_env
from tests.sampling.helpers import tiny

PROMPTS = [[5, 6, 7], list(range(20, 45)), [9], list(range(60, 72)), [1, 2], [3] * 7]
SP = dict(max_new_tokens=64, temperature=0.9, top_p=0.95, n=2, seed=4, stop_token_ids=(0, 1, 2, 3))

SCRIPT = """
import json, sys
import jax
from jaxevo.sampling import Sampler, SamplingParams
from jaxevo.sharding import make_mesh, param_shardings
from tests.sampling.helpers import tiny
from tests.sampling.test_mesh import PROMPTS, SP
assert jax.device_count() == 8, jax.devices()
cfg, params = tiny("llama3", dtype="float32")
res = {}
for shape in [(2, 2, 2), (1, 8, 1)]:
    mesh = make_mesh(shape)
    p = jax.device_put(params, param_shardings(cfg, mesh))
    for continuous in (False, True):
        outs = Sampler(cfg, p, mesh=mesh, max_batch=8, continuous=continuous).generate_ids(
            PROMPTS, SamplingParams(**SP))
        res[f"{shape} continuous={continuous}"] = [[[list(c.token_ids), c.logprob, c.finish_reason]
                                                    for c in o] for o in outs]
print("RESULT" + json.dumps(res))
"""


@pytest.mark.slow
def test_same_samples_on_one_device_and_8_device_mesh():
    cfg, params = tiny("llama3", dtype="float32")
    ref = Sampler(cfg, params, max_batch=8).generate_ids(PROMPTS, SamplingParams(**SP))
    env = subprocess_env(devices=8)
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=root, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.split("RESULT", 1)[1])
    for shape, outs in res.items():
        for o_ref, o in zip(ref, outs):
            for c_ref, (ids, lp, finish) in zip(o_ref, o):
                assert list(c_ref.token_ids) == ids, shape
                assert c_ref.finish_reason == finish
                np.testing.assert_allclose(c_ref.logprob, lp, atol=1e-4)
