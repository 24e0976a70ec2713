"""Subprocess side of tests/models/test_family_train.py (needs 8 CPU devices):

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m tests.models._family_train_worker OUT FAMILY...

For each family of tests/conftest.py's TINY_HF: two SFT steps and two DPO steps (the second DPO
step's policy differs from its reference, so its loss is not log 2 by construction), on 1 device
and on the (data 2, fsdp 2, tensor 2) mesh -> OUT/families.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax

from jaxevo.models.config import ModelConfig
from jaxevo.sharding import make_mesh, param_shardings
from jaxevo.train.batches import BatchStream, tokenize_views
from jaxevo.train.builder import build_step
from jaxevo.train.config import ObjectiveSection, OptimSection, TrainConfig
from jaxevo.train.reference import attach_reference, compute_reference_logps
from jaxevo.train.state import init_state
from jaxevo.train.step import finalize_metrics
from tests.conftest import TINY_HF, random_params
from tests.train.helpers import char_tokenizer, pref_records, sft_records


def run(family: str, objective: str, mesh) -> list[dict]:
    cfg = ModelConfig.from_hf(TINY_HF[family])
    params = random_params(cfg)
    train = TrainConfig(batch_size=8, micro_batch_size=4, seed=0, objective=ObjectiveSection(name=objective),
                        optim=OptimSection(lr=1e-2, schedule="constant", clip_norm=None))
    parts = build_step(train, cfg, mesh, jax.eval_shape(lambda: params), 10)
    records = sft_records(8) if objective == "sft" else pref_records(8)
    data = tokenize_views(records, parts.objective.views, char_tokenizer(), max_length=32,
                          chat_template=False, pad_to_multiple=8)
    p_sh = param_shardings(cfg, mesh)
    params = jax.device_put(params, p_sh)
    if parts.needs_reference:
        ref = compute_reference_logps(params, cfg, data, parts.objective.view_names, mesh=mesh,
                                      param_shardings=p_sh, batch_size=8, pad_to_multiple=8)
        data = attach_reference(data, ref)
    state = init_state(params, parts.tx, 0, parts.state_shardings)
    stream = BatchStream(data, 8, seed=0, pad_to_multiple=8)
    out = []
    for i in range(2):
        state, m = parts.step(state, stream.batch(i))
        out.append({k: float(v) for k, v in finalize_metrics(jax.device_get(m)).items()})
    return out


def main(out: Path, families: list[str]):
    res = {}
    for family in families:
        for objective in ("sft", "preference"):
            for name, shape, devs in (("1", (1, 1, 1), jax.devices()[:1]), ("2x2x2", (2, 2, 2), jax.devices())):
                res[f"{family}/{objective}/{name}"] = run(family, objective, make_mesh(shape, devs))
    (out / "families.json").write_text(json.dumps(res))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
