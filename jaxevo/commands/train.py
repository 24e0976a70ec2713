"""`jaxevo train --config configs/X.yaml [key=value ...]` — one SFT or preference phase."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from jaxevo import cpu_store
from jaxevo.commands import setup_logging
from jaxevo.config import load_config, to_dict
from jaxevo.outputs import check_writable
from jaxevo.plugins import load_plugins
from jaxevo.train import TrainConfig, train


def add_arguments(p):
    p.add_argument("--config", required=True, help="YAML file of a TrainConfig (see configs/train_*.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted overrides, e.g. optim.lr=1e-6 steps=20 data.path=pairs.jsonl")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def run(args) -> int:
    cfg = load_config(TrainConfig, args.config, args.overrides)
    load_plugins(cfg.plugins, "plugins", base_dir=Path(args.config).parent)
    if args.print_config:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    setup_logging(logging.INFO, "%(levelname)s %(name)s: %(message)s")
    check_writable(cfg.out_dir, is_dir=True)
    res = train(cfg)
    last = res.history[-1] if res.history else {}
    summary = {"steps": res.steps, "out_dir": str(res.out_dir),
               "export_dir": str(res.export_dir) if res.export_dir else None,
               "final_metrics": {k: v for k, v in last.items() if k != "tokens"},
               "data": res.stats,
               # the CPU dot path the step ran on (measured once per machine): paths sum differently
               "cpu_paths": cpu_store.used_summary()}
    print(json.dumps(summary, indent=2, default=str))
    return 0
