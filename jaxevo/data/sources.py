"""`load_source(spec)`: one entry point from a config-like dict to a `Source`.

Spec keys: ``type`` (a registered source type, see `source_types()`), the type's own keys,
``limit`` (keep the first N records) and ``checker`` (the answer checker of this data set, see
`jaxevo.checkers`: set on every record, each record checked for the fields it needs) for every type. Field mapping keys (``prompt_field``,
``answer_field``, ``topic_field``, ``id_field``, ``prompt_template``) apply to the file/library
backed types. Examples::

    load_source({"type": "jsonl", "path": "data/prompts.jsonl"})
    load_source({"type": "hf", "path": "gsm8k_test.parquet", "prompt_field": "question"})
    load_source({"type": "tfds", "name": "my_set", "split": "test", "data_dir": "/data/tfds"})
    load_source({"type": "arithmetic", "split": "test", "n": 200, "levels": [1, 2]})
    load_source({"type": "instructions", "n": 500})
    load_source({"type": "dialogues", "split": "test", "n": 50})

then ``source.shard(jax.process_index(), jax.process_count())`` on a multi-host run.
"""

from __future__ import annotations

from typing import Any, Mapping

# Importing these modules registers their source types (the registry lives in `base`).
from jaxevo.data import (  # noqa: F401
    arithmetic, dialogue_turns, dialogues, instructions, interaction_logs, loaders, reasoning_gym_source,
    simulated_logs)
from jaxevo.data.base import SOURCES, Source, check_spec_keys, register_source
from jaxevo.data.records import Record
from jaxevo.errors import ConfigError

__all__ = ["load_source", "source_types", "Source", "register_source"]

COMMON_KEYS = ("limit", "checker")


def source_types() -> list[str]:
    """The registered source types."""
    return sorted(SOURCES)


def load_source(spec: Mapping[str, Any]) -> Source:
    """Build a source from a spec dict and check it early: unknown keys, an unknown type, an
    empty source and a missing field in the first record are `ConfigError`s raised here, not
    halfway through a round."""
    if not isinstance(spec, Mapping):
        raise ConfigError(f"a data source spec must be a mapping, got {type(spec).__name__}")
    kind = spec.get("type")
    source_type = SOURCES.get(kind)
    check_spec_keys(spec, (*source_type.keys, *COMMON_KEYS), f"{kind} source")
    source = source_type.factory({k: v for k, v in spec.items() if k not in COMMON_KEYS})
    limit = spec.get("limit")
    if limit is not None:
        if int(limit) < 1:
            raise ConfigError(f"{kind} source: limit must be >= 1, got {limit}")
        source = source.take(int(limit))
    source = _with_checker(source, None if spec.get("checker") is None else str(spec["checker"]))
    if len(source) == 0:
        raise ConfigError(f"data source {source.name} is empty")
    source[0]  # maps the first record: a wrong field name fails now, naming the fields there are
    return source


def _with_checker(source: Source, name: str | None) -> Source:
    """`source` whose records carry ``checker: name`` (when given). A record with a checker (this
    one or its own ``checker`` field) is checked as it is read: an unknown checker, or a field the
    checker needs and the record lacks, is a ConfigError naming the file and line (or record).
    Records without one keep no checker (the scorers' default, ``number``, then applies)."""
    # Here, not at the top: jaxevo.checkers builds on this package (answers, constraints), so a
    # top-level import would make the two import each other.
    from jaxevo.checkers import check_record_fields, get_checker

    if name is not None:
        get_checker(name)  # an unknown name fails now, listing the known ones

    def attach(record: Record, where: str) -> Record:
        if name is not None:
            record = dict(record, checker=name)
        own = record.get("checker")
        if own is not None:
            try:
                checker = get_checker(own)
            except ConfigError as e:
                raise ConfigError(f"{where}: {e}") from None
            check_record_fields(checker, record, where)
        return record

    return source.map(attach)
