"""`jaxevo evolve --config configs/X.yaml [key=value ...]`: run or resume self-evolution rounds."""

from __future__ import annotations

import logging
from pathlib import Path

from jaxevo.commands import setup_logging


def add_arguments(p):
    p.add_argument("--config", required=True, help="a recipe config, e.g. configs/demo.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted overrides, e.g. run.rounds=1 sample.n=2 run.dir=runs/try")


def run(args) -> int:
    # Imported here, after cli.main's distributed.initialize(): this module is already imported
    # for its arguments, and JAX must not be set up before the processes have joined.
    from jaxevo import distributed
    from jaxevo.config import load_config, to_dict
    from jaxevo.evolve.config import EvolveConfig
    from jaxevo.evolve.driver import run_evolve
    from jaxevo.outputs import check_writable
    from jaxevo.plugins import load_plugins

    main = distributed.is_main()  # on a pod, process 0 speaks for all
    setup_logging(logging.INFO if main else logging.WARNING, "%(asctime)s %(message)s", datefmt="%H:%M:%S")
    cfg = load_config(EvolveConfig, args.config, args.overrides)
    # Relative plugin paths may be relative to the config file (run_evolve loads them again: a no-op).
    load_plugins(cfg.run.plugins, "run.plugins", base_dir=Path(args.config).parent)
    if main:
        check_writable(cfg.run.dir, is_dir=True)
        print(f"jaxevo evolve: {cfg.run.recipe} recipe, {cfg.run.rounds} rounds, run directory {cfg.run.dir}")
    run_evolve(cfg, to_dict(cfg))
    if main:
        print(f"report: {cfg.run.dir}/report.md")
    return 0
