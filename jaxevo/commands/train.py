"""`jaxevo train` — not built yet (issue 4)."""

from __future__ import annotations


def add_arguments(p):
    p.add_argument("rest", nargs="*")


def run(args) -> int:
    from jaxevo.errors import JaxevoError

    raise JaxevoError("'jaxevo train' is not implemented yet (issue 4)")
