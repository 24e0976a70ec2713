"""`constraints`: instruction following. The record's ``constraints`` (IFEval-style dicts checked
by `jaxevo.data.constraints`) score the response: the share satisfied, in [0, 1]. There is no
stated answer apart from the response itself; any non-empty response is well formatted."""

from __future__ import annotations

from jaxevo.checkers.base import Checker, Record, register_checker
from jaxevo.data.constraints import constraint_score

__all__ = ["CONSTRAINTS"]


def _extract(text: str | None, record: Record) -> str | None:
    return text.strip() if text and text.strip() else None


CONSTRAINTS = register_checker(Checker(
    name="constraints",
    extract=_extract,
    check=lambda text, record: constraint_score(text, record["constraints"]),
    well_formatted=lambda text, record: _extract(text, record) is not None,
    needs=("constraints",),
    description="the share of the record's instruction constraints the response satisfies",
))
