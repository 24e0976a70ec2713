"""`jaxevo eval` — not built yet (issue 5)."""

from __future__ import annotations


def add_arguments(p):
    p.add_argument("rest", nargs="*")


def run(args) -> int:
    from jaxevo.errors import JaxevoError

    raise JaxevoError("'jaxevo eval' is not implemented yet (issue 5)")
