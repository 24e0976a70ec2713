"""Common data set schemas mapped to jaxevo records, out of the box.

A jsonl / hf / tfds source takes ``schema: NAME`` (or ``none``); without it the schema is detected
from a row's fields when the row has no ``prompt`` (and the prompt field is not remapped):

    gsm8k    question, answer ending "#### N"        -> answer N (and solution), checker number
    math     problem, solution with \\boxed{...}      -> answer = the last boxed content, checker math
             (an `answer` column, as in MATH-500, wins over the solution's box)
    choice   question, choices, answer               -> choices [str], answer = the letter, checker choice
             (choices as a list or ARC's {"text", "label"}; answer as a letter, an index, the
             choice's text, or ARC's answerKey)
    code     prompt, test [, entry_point]             -> checker code (HumanEval); MBPP's text and
             test_list become prompt and test

Each schema writes a prompt that asks for the answer in its checker's format. The record keeps
every original field. Its `checker` is the source's ``checker:`` key if set, else the row's own
`checker` field, else the schema's.
"""

from __future__ import annotations

import string
from typing import Any, Callable, Mapping

from jaxevo.data.prompts import DEFAULT_ARITHMETIC_TEMPLATE
from jaxevo.data.records import FieldMap, Record, map_record, to_python
from jaxevo.errors import ConfigError

__all__ = ["SCHEMAS", "CHECKER_OF", "detect_schema", "apply_schema", "map_row", "last_boxed", "choice_prompt"]

MATH_TEMPLATE = "{problem}\nSolve it step by step, then put the final answer in \\boxed{{}}."
CHOICE_INSTRUCTION = "Answer with the letter of the correct option, e.g. 'The answer is (A)'."
MBPP_TEMPLATE = "{text}\nYour code should pass these tests:\n{tests}\nWrite the code in a ```python block."
LETTERS = string.ascii_uppercase


def last_boxed(text: str) -> str | None:
    r"""The content of the last \boxed{...} (or \fbox{...}) in `text`, nested braces kept whole."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1:j].strip()
    return None  # unbalanced


def choice_prompt(question: str, choices: list[str]) -> str:
    """The question, its options lettered "A. ...", and how to answer."""
    options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
    return f"{question}\n{options}\n{CHOICE_INSTRUCTION}"


def _gsm8k(raw: dict, where: str) -> dict:
    _need(raw, ("question", "answer"), "gsm8k", where)
    return {**raw, "prompt": DEFAULT_ARITHMETIC_TEMPLATE.replace("{question}", str(raw["question"]))}


def _math(raw: dict, where: str) -> dict:
    _need(raw, ("problem",), "math", where)
    answer = raw.get("answer")
    if answer is None:
        _need(raw, ("solution",), "math", where)
        answer = last_boxed(str(raw["solution"]))
        if answer is None:
            raise ConfigError(f"{where}: math schema: the solution has no \\boxed{{...}} answer "
                              "(give an 'answer' field)")
    return {**raw, "prompt": MATH_TEMPLATE.format(problem=raw["problem"]), "answer": str(answer)}


def _choice(raw: dict, where: str) -> dict:
    _need(raw, ("question", "choices"), "choice", where)
    choices = raw["choices"]
    if isinstance(choices, Mapping):  # ARC: {"text": [...], "label": ["A", ...]}
        labels, choices = list(choices.get("label") or []), list(choices.get("text") or [])
    else:
        labels = []
    if not isinstance(choices, list) or not 2 <= len(choices) <= len(LETTERS):
        raise ConfigError(f"{where}: choice schema: 'choices' must be a list of 2 to 26 options, "
                          f"got {raw['choices']!r}")
    choices = [str(c) for c in choices]
    gold = raw.get("answer", raw.get("answerKey"))
    if gold is None:
        raise ConfigError(f"{where}: choice schema needs the field 'answer' (a letter, an index or "
                          f"the option's text); the row has {sorted(raw)}")
    letter = _letter(gold, choices, [str(x) for x in labels], where)
    return {**raw, "prompt": choice_prompt(str(raw["question"]), choices), "choices": choices, "answer": letter}


def _letter(gold: Any, choices: list[str], labels: list[str], where: str) -> str:
    if isinstance(gold, int) and not isinstance(gold, bool):
        if 0 <= gold < len(choices):
            return LETTERS[gold]
    else:
        g = str(gold).strip()
        if g in labels:  # ARC labels may be "1".."4"
            return LETTERS[labels.index(g)]
        if len(g) == 1 and g.upper() in LETTERS[:len(choices)]:
            return g.upper()
        if g in choices:
            return LETTERS[choices.index(g)]
    raise ConfigError(f"{where}: choice schema: answer {gold!r} is not a letter, an index or the text "
                      f"of one of the {len(choices)} choices")


def _code(raw: dict, where: str) -> dict:
    if "prompt" not in raw and "text" in raw and "test_list" in raw:  # MBPP
        tests = "\n".join(map(str, raw["test_list"]))
        setup = str(raw.get("test_setup_code") or "")
        return {**raw, "prompt": MBPP_TEMPLATE.format(text=raw["text"], tests=tests),
                "test": f"{setup}\n{tests}".strip()}
    _need(raw, ("prompt", "test"), "code", where)
    return raw


SCHEMAS: dict[str, Callable[[dict, str], dict]] = {"gsm8k": _gsm8k, "math": _math, "choice": _choice, "code": _code}
CHECKER_OF = {"gsm8k": "number", "math": "math", "choice": "choice", "code": "code"}


def detect_schema(raw: Mapping[str, Any]) -> str | None:
    """The schema a row's fields fit (see the module doc), or None."""
    if "prompt" in raw or "messages" in raw:
        return "code" if "prompt" in raw and "test" in raw else None
    if "question" in raw and "choices" in raw:
        return "choice"
    if "question" in raw and isinstance(raw.get("answer"), str) and "####" in raw["answer"]:
        return "gsm8k"
    if "problem" in raw and ("solution" in raw or "answer" in raw):
        return "math"
    if "text" in raw and "test_list" in raw:
        return "code"
    return None


def apply_schema(name: str, raw: dict, where: str) -> dict:
    """`raw` mapped by schema `name` (with its default checker unless the row names one)."""
    if name not in SCHEMAS:
        raise ConfigError(f"unknown schema {name!r}; known: {', '.join(sorted(SCHEMAS))}, none")
    out = SCHEMAS[name](dict(raw), where)
    out.setdefault("checker", CHECKER_OF[name])
    return out


def _need(raw: Mapping[str, Any], fields: tuple[str, ...], schema: str, where: str) -> None:
    missing = [f for f in fields if raw.get(f) is None]
    if missing:
        raise ConfigError(f"{where}: the {schema} schema needs the field(s) {', '.join(missing)}; "
                          f"the row has {', '.join(sorted(raw)) or 'none'}")


def map_row(raw: Mapping[str, Any], fields: FieldMap, default_id: str, where: str) -> Record:
    """One raw row of a file or library source as a record: its schema (given, or detected when
    the prompt field is not remapped), then `records.map_record`'s field mapping."""
    raw = to_python(dict(raw))
    name = fields.schema
    if name is None and fields.prompt == "prompt":
        name = detect_schema(raw)
    if name not in (None, "none"):
        raw = apply_schema(name, raw, where)
    return map_record(raw, fields, default_id, where)
