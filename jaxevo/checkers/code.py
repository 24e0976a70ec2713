"""`code`: the completion's Python, run against the record's ``test`` in the sandbox
(`jaxevo.checkers.sandbox`); 1.0 when the program exits 0 within its limits, else 0.0. A hang, a
crash, a memory or fork bomb, a write outside its directory or a socket all score 0 and never
affect the caller.

The code is the first fenced block (```python, ```py or a bare ```), or the whole completion
when it has no fence and parses as Python. The program run is: the code, then ``test`` (Python:
asserts, or HumanEval's ``def check(candidate)``), then ``check(<entry_point>)`` when the record
has an ``entry_point`` and the test defines ``check``. When the code does not define the
entry point but the record's prompt does (HumanEval: the model writes only the body), the prompt
goes first.
"""

from __future__ import annotations

import re

from jaxevo.checkers.base import Checker, Record, register_checker
from jaxevo.checkers.sandbox import Limits, run_python

__all__ = ["extract_code", "program", "make_code_checker", "CODE"]

_ANY_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)```", re.S)


def _compiles(source: str) -> bool:
    try:
        compile(source, "<completion>", "exec")  # compiling runs nothing
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False
    return True


def extract_code(text: str | None, record: Record | None = None) -> str | None:
    """The code a completion gives: its first Python (or untagged) fenced block, else the whole
    text if it compiles — alone, or after the record's prompt when that defines the entry point
    (a HumanEval completion is only the function's body)."""
    if not text or not text.strip():
        return None
    for m in _ANY_FENCE_RE.finditer(text):
        if m.group(1).lower() in ("", "python", "python3", "py") and m.group(2).strip():
            return m.group(2)
    if "```" in text:
        return None  # fenced, but only in other languages (or unclosed): no Python stated
    if _compiles(text):
        return text
    head = _prompt_head(text, record) if record is not None else ""
    return text if head and _compiles(head + text) else None


def _prompt_head(code: str, record: Record) -> str:
    """The record's prompt when the code lacks the entry point's definition and the prompt has it."""
    entry = record.get("entry_point")
    if not entry or re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(entry)}\s*\(", code, re.M):
        return ""
    prompt = record.get("prompt") or ""
    return prompt if re.search(rf"def\s+{re.escape(entry)}\s*\(", prompt) else ""


def program(code: str, record: Record) -> str:
    """The script the sandbox runs for `code` against `record`'s test."""
    entry = record.get("entry_point")
    parts = [_prompt_head(code, record) + code, str(record["test"])]
    if entry and re.search(r"^def\s+check\s*\(", str(record["test"]), re.M):
        parts.append(f"check({entry})")
    return "\n\n".join(parts) + "\n"


def make_code_checker(name: str = "code", limits: Limits = Limits()) -> Checker:
    """A code checker with its own sandbox limits (register it under another name for tasks
    that need more time or memory)."""

    def check(text: str | None, record: Record) -> float:
        code = extract_code(text, record)
        if code is None:
            return 0.0
        return float(run_python(program(code, record), limits).ok)

    return Checker(name=name, extract=extract_code, check=check,
                   well_formatted=lambda text, record: extract_code(text, record) is not None,
                   needs=("test",), concurrent=True,
                   description="Python run against the record's tests in a sandboxed process")


CODE = register_checker(make_code_checker())
