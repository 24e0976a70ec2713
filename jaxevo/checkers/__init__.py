"""Answer checkers: what a correct, well-formatted final answer is for one kind of task.

A data set picks its checker by name (``checker: number`` in its source spec, or a ``checker``
field per record; `checker_for(record)`); the verifier scorer, the format-only control,
self-consistency votes, selection and `jaxevo eval` all ask the same object, so "well formatted"
means one thing per task everywhere.

    checker = get_checker("number")
    checker.extract(text, record)        -> the stated answer (canonical string) or None
    checker.check(text, record)          -> 1.0 / 0.0 (or a partial score in [0, 1]); None = no opinion
    checker.well_formatted(text, record) -> does the text state an answer in this task's format?
    checker.needs                        -> record fields `check` reads (e.g. ("answer",))

Built in (one module each):

    number       a final number in a strict format (today's verifier; `jaxevo.data.answers`)
    probe        a dialogue memory probe: one short sentence naming the fact (`check_probe`)
    math         symbolic / LaTeX equivalence by math-verify               (maths.py)
    choice       a letter among the record's ``choices``                     (choice.py)
    exact, normalized, regex   string answers                              (strings.py)
    constraints  share of the record's instruction constraints satisfied   (constraints.py)
    code         the completion's Python against the record's ``test``, sandboxed (code.py, sandbox.py)

Many at once: ``check_many(texts, records)`` (code checks run in parallel processes).

Add one with ``register_checker(Checker(name, extract, check, well_formatted, needs))``.
"""

from __future__ import annotations

# Importing the modules registers their checkers.
from jaxevo.checkers import choice, code, constraints, maths, number, strings  # noqa: F401
from jaxevo.checkers.base import (
    CHECKERS,
    Checker,
    check_record_fields,
    checker_for,
    get_checker,
    register_checker,
)
from jaxevo.checkers.batch import check_many

__all__ = ["Checker", "CHECKERS", "register_checker", "get_checker", "check_record_fields", "checker_for",
           "check_many"]
