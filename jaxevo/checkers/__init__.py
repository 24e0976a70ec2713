"""Answer checkers: what a correct, well-formatted final answer is for one kind of task.

A data set picks its checker by name (``checker: number``); the verifier scorer, the format-only
control, self-consistency votes, `jaxevo eval` and `jaxevo score` all ask the same object, so "well
formatted" means one thing per task everywhere.

    checker = get_checker("number")
    checker.extract(text, record)        -> the stated answer (canonical string) or None
    checker.check(text, record)          -> 1.0 / 0.0 (or a partial score in [0, 1]); None = no opinion
    checker.well_formatted(text, record) -> does the text state an answer in this task's format?
    checker.needs                        -> record fields `check` reads (e.g. ("answer",))

Add one with ``@register_checker("name")`` on a `Checker` factory, or ``CHECKERS.add``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from jaxevo.data.answers import answers_match, extract_answer, follows_format
from jaxevo.errors import ConfigError
from jaxevo.registry import Registry, typed

__all__ = ["Checker", "CHECKERS", "register_checker", "get_checker", "check_record_fields"]

Record = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Checker:
    """One task kind's notion of a stated answer, a correct answer and a well-formatted one."""

    name: str
    extract: Callable[[str | None, Record], str | None]
    check: Callable[[str | None, Record], float | None]
    well_formatted: Callable[[str | None, Record], bool]
    needs: tuple[str, ...] = ("answer",)


CHECKERS: Registry[Checker] = Registry("checker", adapt=typed(
    Checker, "build a jaxevo.checkers.Checker(name, extract, check, well_formatted) and name that"))


def register_checker(checker: Checker, *aliases: str, replace: bool = False) -> Checker:
    """Register `checker` under its name (and each alias). Returns it."""
    return CHECKERS.add(checker.name, checker, *aliases, replace=replace)


def get_checker(name: str) -> Checker:
    """The checker called `name`; a ConfigError listing the known ones otherwise."""
    return CHECKERS.get(name, "checker")


def check_record_fields(checker: Checker, record: Record, where: str) -> None:
    """Raise a ConfigError naming `where` (file:line) and the field when `record` lacks one the
    checker needs."""
    for field in checker.needs:
        if record.get(field) is None:
            raise ConfigError(f"{where}: checker {checker.name!r} needs the field {field!r}, "
                              f"which this record does not have")


def _number_check(text: str | None, record: Record) -> float:
    return float(answers_match(extract_answer(text), record.get("answer")))


register_checker(Checker(
    name="number",
    extract=lambda text, record: extract_answer(text),
    check=_number_check,
    well_formatted=lambda text, record: follows_format(text, record),
))
