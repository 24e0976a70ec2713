"""`jaxevo plan --config X.yaml [key=value ...] [--devices N] [--platform tpu|cpu] [--json OUT]`

Compile the train step and the sampler ahead of time on abstract shapes for the configured mesh
and target slice; print per-device memory, FLOPs and the MFU to expect (see `jaxevo.plan`).
No weights are read: the model is a HF config.json or a preset name.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from jaxevo.config import load_config
from jaxevo.plan import PlanConfig, make_plan, parse_accelerator
from jaxevo.plan_report import format_plan


def add_arguments(p):
    p.add_argument("--config", required=True, help="a PlanConfig YAML, e.g. configs/scale/llama3.1-8b-v5p-32.yaml")
    p.add_argument("--devices", type=int, default=None, help="override the device count of the target")
    p.add_argument("--platform", choices=("tpu", "cpu"), default=None,
                   help="tpu: AOT for the TPU topology (needs libtpu); cpu: a host-CPU mesh of the same shape")
    p.add_argument("--accelerator", default=None, help="override target.accelerator (e.g. v5e-64)")
    p.add_argument("--json", default=None, help="also write the plan as JSON to this file")
    p.add_argument("overrides", nargs="*", help="key=value overrides (e.g. train.batch_size=32)")


def _force_cpu_devices(n: int) -> None:
    """Ask XLA for n host CPU devices; only effective before the CPU backend starts (importing jax
    does not start it)."""
    flag = f"--xla_force_host_platform_device_count={n}"
    cur = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in cur:
        os.environ["XLA_FLAGS"] = (cur + " " + flag).strip()


def run(args) -> int:
    over = list(args.overrides)
    if args.devices is not None:
        over.append(f"target.devices={args.devices}")
    if args.platform is not None:
        over.append(f"target.platform={args.platform}")
    if args.accelerator is not None:
        over.append(f"target.accelerator={args.accelerator}")
    cfg = load_config(PlanConfig, args.config, over)
    _, _, chips = parse_accelerator(cfg.target.accelerator)
    _force_cpu_devices(cfg.target.devices or chips)  # for the CPU path / fallback
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")  # not on a TPU VM: no metadata server
    plan = make_plan(cfg, base=Path(args.config).parent)
    print(format_plan(plan))
    if args.json:
        Path(args.json).write_text(json.dumps(plan, indent=2, default=float))
        print(f"\nwrote {args.json}", file=sys.stderr)
    return 0
