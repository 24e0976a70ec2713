"""The checker registry: one object per task kind that says what a stated answer, a correct answer
and a well-formatted answer are. See the package docstring for the interface."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from jaxevo.errors import ConfigError
from jaxevo.registry import Registry, typed

__all__ = ["Checker", "CHECKERS", "register_checker", "get_checker", "check_record_fields",
           "checker_for", "Record"]

Record = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Checker:
    """One task kind's notion of a stated answer, a correct answer and a well-formatted one.

    extract(text, record)         -> the stated answer as a canonical string (votes compare these), or None
    check(text, record)           -> score in [0, 1] (1.0 correct), or None for "no opinion"
    well_formatted(text, record)  -> does `text` state an answer in this task's format?
    needs                         -> record fields `check` reads; `check_record_fields` tests them
    concurrent                    -> `check` waits on other processes (code) and may run in threads
    """

    name: str
    extract: Callable[[str | None, Record], str | None]
    check: Callable[[str | None, Record], float | None]
    well_formatted: Callable[[str | None, Record], bool]
    needs: tuple[str, ...] = ("answer",)
    description: str = ""
    concurrent: bool = False


CHECKERS: Registry[Checker] = Registry("checker", adapt=typed(
    Checker, "build a jaxevo.checkers.Checker(name, extract, check, well_formatted) and name that"))


def register_checker(checker: Checker, *aliases: str, replace: bool = False) -> Checker:
    """Register `checker` under its name (and each alias). Returns it."""
    return CHECKERS.add(checker.name, checker, *aliases, replace=replace)


def get_checker(name: str) -> Checker:
    """The checker called `name`; a ConfigError listing the known ones otherwise."""
    return CHECKERS.get(name, "checker")


def checker_for(record: Record, default: str = "number") -> Checker:
    """The checker a record asks for: its ``checker`` field (set by a source spec's ``checker:``),
    else ``probe`` for a dialogue memory probe (``kind: probe``), else `default`."""
    name = record.get("checker") or ("probe" if record.get("kind") == "probe" else default)
    return get_checker(name)


def check_record_fields(checker: Checker, record: Record, where: str) -> None:
    """Raise a ConfigError naming `where` (file:line) and the field when `record` lacks one the
    checker needs."""
    for field in checker.needs:
        if record.get(field) is None:
            raise ConfigError(f"{where}: checker {checker.name!r} needs the field {field!r}, "
                              f"which this record does not have")
