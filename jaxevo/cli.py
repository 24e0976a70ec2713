"""The `jaxevo` command. Each subcommand lives in `jaxevo/commands/<name>.py` and exposes
`add_arguments(parser)` and `run(args) -> int`; modules are imported only when
their subcommand runs, so `jaxevo --help` is instant and one broken command cannot break the rest.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from jaxevo.errors import JaxevoError
from jaxevo.host_memory import keep_freed_memory

# Order = the command-line contract in DESIGN.md.
COMMANDS = {
    "generate": "sample completions for a JSONL of prompts",
    "export": "write a model as a Hugging Face directory (config, safetensors, tokenizer)",
    "evolve": "run or resume self-evolution rounds from a config",
    "train": "one SFT or preference phase on a JSONL data set",
    "eval": "accuracy of a model on a built-in task or a JSONL of {prompt, answer}",
    "score": "score completions (jaxevo generate's output) with a checker or reward functions",
    "plan": "compile the train step and sampler on abstract shapes; print memory and FLOPs",
    "compare": "a run's held-out accuracy against its format-only control run's, paired per item",
}

# Commands that run no model: they skip JAX's set-up (and its import, seconds on a loaded machine).
NO_JAX = ("score", "compare")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxevo", description=(
        "Self-evolution rounds for LLMs in JAX: sample, critique, refine, train, repeat."))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_ in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--plugin", action="append", default=[], metavar="MODULE_OR_FILE",
                       help="import a module (or a .py file) first, so its registered scorers, "
                            "rewards, checkers, stages, losses and sources can be named (repeatable)")
        if name in _requested():
            importlib.import_module(f"jaxevo.commands.{name}").add_arguments(p)
    return parser


def _requested() -> set[str]:
    return {a for a in sys.argv[1:2] if a in COMMANDS}


def main(argv: list[str] | None = None) -> int:
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    parser = build_parser()
    args = parser.parse_args()
    if not args.command:
        parser.print_help()
        return 0
    from jaxevo.outputs import OutputError, storage_cause
    from jaxevo.plugins import load_plugins

    preempted: tuple[type[BaseException], ...] = ()  # a training signal: set once jax is loaded

    try:
        if args.command not in NO_JAX:
            # Here, not at the top: they import jax, which `jaxevo --help` does not need.
            from jaxevo import distributed, preemption
            from jaxevo.runtime import enable_compilation_cache

            preempted = (preemption.Preempted,)
            enable_compilation_cache()
            if args.command != "plan":  # plan compiles for a target mesh on this host alone
                # Multi-host: a no-op unless JAXEVO_COORDINATOR is set or this is a Cloud TPU VM.
                distributed.initialize()
        load_plugins(args.plugin, "--plugin")  # before any config names what they register
        code = importlib.import_module(f"jaxevo.commands.{args.command}").run(args) or 0
        if args.command not in NO_JAX:
            from jaxevo.runtime import compile_summary

            if (line := compile_summary()) is not None:
                print(f"jaxevo {args.command}: {line}", file=sys.stderr)
        return code
    except JaxevoError as e:
        print(f"jaxevo {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"jaxevo {args.command}: interrupted", file=sys.stderr)
        return 130
    except preempted as e:  # a signal during training: the checkpoint is on disk
        print(f"jaxevo {args.command}: {e}", file=sys.stderr)
        return e.code
    except OSError as e:  # disk full, read-only, permission: one line naming the path
        if storage_cause(e) is None:
            raise
        print(f"jaxevo {args.command}: error: {OutputError.from_exc(e, e.filename or '?')}",
              file=sys.stderr)
        return 2


def entry() -> int:
    """The `jaxevo` console script: process-wide malloc settings (jaxevo/host_memory.py), taken
    before JAX starts its threads, then `main`. Tests call `main` in their own process."""
    keep_freed_memory()
    return main()


if __name__ == "__main__":
    sys.exit(entry())
