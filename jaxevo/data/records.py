"""Records, field mapping and stable hashing shared by every source.

A record is a plain dict with at least a stable string ``"id"`` and a ``"prompt"``; optional
``"answer"`` (exact string, integers as digits), ``"solution"`` (GSM8K-style, ends "#### N"),
``"topic"``, ``"constraints"``, ``"task"``, and whatever else the source carries. Plain dicts (not
dataclasses) because records are written to JSONL between stages and sources carry arbitrary
extra columns.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import Any, Mapping

from jaxevo.data.answers import normalize_number
from jaxevo.errors import ConfigError

Record = dict[str, Any]

__all__ = [
    "Record",
    "FieldMap",
    "map_record",
    "stable_hash",
    "split_of",
    "to_python",
    "apply_prompt_template",
]


def stable_hash(*parts: object) -> str:
    """Hex SHA-256 of the parts' reprs: identical on every host and Python process (unlike
    ``hash()``, which is salted per process), so ids and splits agree across a TPU pod."""
    h = hashlib.sha256()
    for p in parts:
        h.update(repr(p).encode("utf-8"))
        h.update(b"\x1f")
    return h.hexdigest()


def split_of(canonical: object, test_fraction: float) -> str:
    """``"test"`` or ``"train"`` from a hash of the canonical problem. Because the split is a
    function of the problem itself, the same problem can never land in both splits, whatever
    the seed or the number of items drawn."""
    bucket = int(stable_hash("split", canonical)[:8], 16) / 0x100000000
    return "test" if bucket < test_fraction else "train"


def to_python(value: Any) -> Any:
    """Plain Python values from TFDS/Arrow/NumPy ones: bytes -> str, numpy scalars -> int/float,
    arrays -> lists, recursively."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, Mapping):
        return {str(k): to_python(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_python(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalar or array
        return to_python(value.tolist())
    return value


def apply_prompt_template(question: str, template: str) -> str:
    """``template.format(question=question)``, with a clear error for a template without the slot."""
    if "{question}" not in template:
        raise ConfigError(f"prompt_template must contain '{{question}}', got {template!r}")
    return template.replace("{question}", question)


@dataclasses.dataclass(frozen=True)
class FieldMap:
    """Which raw column is which record field.

    ``None`` for answer/topic/id means "use the column of the standard name if there is one":
    an explicitly named column that is missing is an error, a default one is simply absent.
    """

    prompt: str = "prompt"
    answer: str | None = None
    topic: str | None = None
    id: str | None = None
    prompt_template: str | None = None

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> "FieldMap":
        return cls(
            prompt=spec.get("prompt_field", "prompt"),
            answer=spec.get("answer_field"),
            topic=spec.get("topic_field"),
            id=spec.get("id_field"),
            prompt_template=spec.get("prompt_template"),
        )


FIELD_MAP_KEYS = ("prompt_field", "answer_field", "topic_field", "id_field", "prompt_template")

_GSM8K_FINAL = re.compile(r"####\s*(.+?)\s*$", re.S)


def _gold_answer(value: Any) -> tuple[str, str | None]:
    """(answer, solution or None). GSM8K stores the worked solution in its answer column, ending
    "#### N"; split it so "answer" is always the exact final value."""
    if isinstance(value, bool):
        return str(value).lower(), None
    if isinstance(value, int):
        return str(value), None
    if isinstance(value, float):
        return (normalize_number(repr(value)) or repr(value)), None
    text = str(value).strip()
    m = _GSM8K_FINAL.search(text)
    if m and "####" in text:
        final = m.group(1).strip()
        return (normalize_number(final) or final), text
    return (normalize_number(text) or text), None


def _field(raw: Mapping[str, Any], name: str, where: str) -> Any:
    if name not in raw:
        available = ", ".join(sorted(map(str, raw))) or "(none)"
        raise ConfigError(f"{where}: field {name!r} not found; available fields: {available}")
    return raw[name]


def map_record(raw: Mapping[str, Any], fields: FieldMap, default_id: str, where: str) -> Record:
    """Turn one raw row into a record. `default_id` is used when no id column is mapped or
    present; `where` (e.g. "data.jsonl line 3") prefixes error messages."""
    raw = to_python(dict(raw))
    record: Record = dict(raw)
    prompt = _field(raw, fields.prompt, where)
    if not isinstance(prompt, str):
        raise ConfigError(f"{where}: prompt field {fields.prompt!r} must be a string, got {type(prompt).__name__}")
    if fields.prompt_template is not None:
        record["question"] = prompt
        prompt = apply_prompt_template(prompt, fields.prompt_template)
    record["prompt"] = prompt

    answer_col = fields.answer if fields.answer is not None else ("answer" if "answer" in raw else None)
    if answer_col is not None:
        answer, solution = _gold_answer(_field(raw, answer_col, where))
        record["answer"] = answer
        if solution is not None and "solution" not in raw:
            record["solution"] = solution

    topic_col = fields.topic if fields.topic is not None else ("topic" if "topic" in raw else None)
    if topic_col is not None:
        record["topic"] = str(_field(raw, topic_col, where))

    id_col = fields.id if fields.id is not None else ("id" if "id" in raw else None)
    record["id"] = str(_field(raw, id_col, where)) if id_col is not None else default_id
    return record
