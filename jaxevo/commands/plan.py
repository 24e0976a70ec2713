"""`jaxevo plan` — not built yet (issue 7)."""

from __future__ import annotations


def add_arguments(p):
    p.add_argument("rest", nargs="*")


def run(args) -> int:
    from jaxevo.errors import JaxevoError

    raise JaxevoError("'jaxevo plan' is not implemented yet (issue 7)")
