"""Subprocess side of the multi-process tests: one short SFT phase, one DPO phase and a sampling
run on a tiny model over a (2, 2, 2) mesh of all global devices.

    # one process, 8 devices
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m tests.scale._mp_worker OUT
    # process i of 2, 4 devices each
    XLA_FLAGS=--xla_force_host_platform_device_count=4 JAXEVO_COORDINATOR=127.0.0.1:PORT \
        JAXEVO_NUM_PROCESSES=2 JAXEVO_PROCESS_ID=i python -m tests.scale._mp_worker OUT

Every process writes OUT/proc<i>.json (losses, samples, its device counts) so the test can check
that all processes saw the same results; process 0 also writes OUT/params.npz (the final SFT and
DPO params, gathered) — the `main_only` pattern.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from jaxevo import distributed

distributed.initialize()  # from JAXEVO_* env (two-process run) or a no-op (single process)

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402


def config(out_dir: Path, objective: str, steps: int):
    from jaxevo.config import load_config
    from jaxevo.train import TrainConfig

    return load_config(TrainConfig, None, [
        f"out_dir={out_dir}", f"steps={steps}", "batch_size=8", "seed=1", "mesh=[2,2,2]",
        f"objective.name={objective}", "data.chat_template=false", "data.pad_to_multiple=8",
        "data.max_length=32", "optim.lr=1e-2", "optim.warmup_steps=1",
        "checkpoint.every=2", "checkpoint.export=true", "log.progress=false",
        "log.tensorboard=false"])


def flat(tree):
    # The full arrays on every process (params are sharded over both processes' devices).
    host = (multihost_utils.process_allgather(tree, tiled=True) if jax.process_count() > 1
            else jax.device_get(tree))
    return {jax.tree_util.keystr(k): np.asarray(v)
            for k, v in jax.tree_util.tree_flatten_with_path(host)[0]}


def main(out: Path) -> None:
    from jaxevo.sampling import Sampler, SamplingParams
    from jaxevo.sharding import make_mesh
    from jaxevo.train import train
    from tests.train.helpers import pref_records, pretrained, sft_records

    mesh = make_mesh((2, 2, 2))  # all global devices, ordered by process
    run_dir = out / "runs"  # shared by the processes (one filesystem), one per configuration
    sft = train(config(run_dir / "sft", "sft", 4), pretrained=pretrained(0, dtype="float32"),
                records=sft_records(16), mesh=mesh)
    dpo = train(config(run_dir / "dpo", "preference", 3), pretrained=pretrained(0, dtype="float32"),
                records=pref_records(8), mesh=mesh)

    pre = pretrained(0, dtype="float32")
    sampler = Sampler(pre.cfg, sft.state.params, pre.tokenizer, mesh=mesh, max_batch=8)
    prompts = ["rev cat", "rev dog", "rev bird", "say fish"]
    outs = sampler.generate(prompts, SamplingParams(temperature=0.9, n=2, max_new_tokens=8, seed=3),
                            chat=False)
    samples = [[{"text": c.text, "ids": list(c.token_ids), "logprob": c.logprob,
                 "finish": c.finish_reason} for c in per] for per in outs]
    greedy = sampler.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=8), chat=False)

    params = {"sft/" + k: v for k, v in flat(sft.state.params).items()}
    params.update({"dpo/" + k: v for k, v in flat(dpo.state.params).items()})
    summary = {
        "process": jax.process_index(), "processes": jax.process_count(),
        "local_devices": jax.local_device_count(), "devices": jax.device_count(),
        "sft_losses": [m["loss"] for m in sft.history], "dpo_losses": [m["loss"] for m in dpo.history],
        "dpo_margins": [m["rewards/margins"] for m in dpo.history],
        "sft_steps": sft.steps, "dpo_steps": dpo.steps,
        "samples": samples, "greedy": [[c.text for c in per] for per in greedy],
        "params_digest": {k: float(np.sum(np.abs(v), dtype=np.float64)) for k, v in params.items()},
        "export": str(sft.export_dir),
    }
    (out / f"proc{jax.process_index()}.json").write_text(json.dumps(summary))
    write_params = distributed.main_only(lambda: np.savez(out / "params.npz", **params))
    write_params()
    distributed.barrier("mp_worker_done")


if __name__ == "__main__":
    o = Path(sys.argv[1])
    o.mkdir(parents=True, exist_ok=True)
    main(o)
