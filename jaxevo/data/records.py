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
    "chat_of",
    "check_messages",
    "last_user_text",
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
    schema: str | None = None  # a `jaxevo.data.schemas` name, "none", or None (detect)
    checker: str | None = None  # every record's answer checker (wins over the row's and the schema's)
    system: str | None = None  # a system turn for records that have none

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> "FieldMap":
        return cls(
            prompt=spec.get("prompt_field", "prompt"),
            answer=spec.get("answer_field"),
            topic=spec.get("topic_field"),
            id=spec.get("id_field"),
            prompt_template=spec.get("prompt_template"),
            schema=spec.get("schema"),
            checker=spec.get("checker"),
            system=spec.get("system"),
        )


FIELD_MAP_KEYS = ("prompt_field", "answer_field", "topic_field", "id_field", "prompt_template",
                  "schema", "checker", "system")

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


def check_messages(messages: Any, where: str) -> list[dict[str, str]]:
    """A chat: a non-empty list of {"role", "content"} strings, roles system/user/assistant, ending
    with a user turn (the model writes the next assistant turn)."""
    ok = isinstance(messages, list) and messages and all(
        isinstance(m, Mapping) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in messages)
    if not ok:
        raise ConfigError(f"{where}: \"messages\" must be a non-empty list of "
                          "{\"role\": ..., \"content\": \"...\"} objects")
    roles = [m["role"] for m in messages]
    bad = sorted(set(roles) - {"system", "user", "assistant"})
    if bad:
        raise ConfigError(f"{where}: message role(s) {bad}; use system, user or assistant")
    if roles[-1] != "user":
        raise ConfigError(f"{where}: the last message must be the user's (the model answers it), "
                          f"got {roles[-1]!r}")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def last_user_text(messages: Any, where: str) -> str:
    """The last user turn of a chat (checked): the record's plain `prompt`, shown in reports and
    filled into the feedback and refinement templates."""
    return check_messages(messages, where)[-1]["content"]


def chat_of(record: Mapping[str, Any]) -> "str | list[dict[str, str]]":
    """What the model is asked: the record's chat `messages` (system turn and earlier turns
    included), else its `prompt` after its own `system` turn when it has one, else the plain
    prompt string. The sampler and the trainer render it with the same chat template."""
    if record.get("messages"):
        return record["messages"]
    if record.get("system"):
        return [{"role": "system", "content": record["system"]}, {"role": "user", "content": record["prompt"]}]
    return record["prompt"]


def map_record(raw: Mapping[str, Any], fields: FieldMap, default_id: str, where: str) -> Record:
    """Turn one raw row into a record. `default_id` is used when no id column is mapped or
    present; `where` (e.g. "data.jsonl line 3") prefixes error messages. A row with chat
    `messages` and no prompt field keeps them; its `prompt` is the last user turn."""
    raw = to_python(dict(raw))
    if fields.prompt not in raw and "messages" in raw:
        raw["messages"] = check_messages(raw["messages"], where)
        raw[fields.prompt] = raw["messages"][-1]["content"]
    record: Record = dict(raw)
    prompt = _field(raw, fields.prompt, where)
    if not isinstance(prompt, str):
        raise ConfigError(f"{where}: prompt field {fields.prompt!r} must be a string, got {type(prompt).__name__}")
    if fields.prompt_template is not None:
        record["question"] = prompt
        prompt = apply_prompt_template(prompt, fields.prompt_template)
        if "messages" in record:  # the template wraps the last user turn the model sees
            record["messages"] = record["messages"][:-1] + [{"role": "user", "content": prompt}]
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
    if fields.checker is not None:
        record["checker"] = fields.checker
    if fields.system is not None and not record.get("system") and "messages" not in record:
        record["system"] = fields.system
    return record
