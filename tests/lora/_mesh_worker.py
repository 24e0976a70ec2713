"""Subprocess worker of tests/lora/test_lora_mesh.py (needs XLA_FLAGS set before jax starts):
the same LoRA DPO steps on 1 device and on the (2, 2, 2) mesh of 8 CPU devices."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax

from jaxevo.sharding import make_mesh
from jaxevo.train.builder import build
from tests.lora.test_train_lora import _run, frozen_base, lora_config
from tests.train.helpers import pref_records


def main(out: Path) -> None:
    res = {}
    for name, shape, devices in (("1", (1, 1, 1), jax.devices()[:1]),
                                 ("2x2x2", (2, 2, 2), jax.devices())):
        cfg = lora_config(out / name, "steps=4", "optim.lr=1e-2", "micro_batch_size=4",
                          "objective.name=preference", "objective.precompute_ref=false")
        t = build(cfg, pretrained=frozen_base(), records=pref_records(8),
                  mesh=make_mesh(shape, devices))
        state, hist = _run(t, 4)
        res[name] = {"devices": len(devices), "curve": hist,
                     "q_a_spec": str(state.params["q"]["lora_a"].sharding.spec),
                     "q_b_spec": str(state.params["q"]["lora_b"].sharding.spec),
                     "up_b_spec": str(state.params["up"]["lora_b"].sharding.spec)}
    (out / "mesh.json").write_text(json.dumps(res))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
