"""The one source interface and its registry.

A `Source` is a random-access, iterable view of records with stable ids. Every backend (JSONL,
Hugging Face `datasets`, TFDS array_record, the built-in generators) already offers ``len`` and
``__getitem__``, so a source is just (getter, index range): sharding by host is slicing that
range, and a host never reads another host's records.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from jaxevo.data.records import Record
from jaxevo.errors import ConfigError
from jaxevo.registry import Registry, typed

__all__ = ["Source", "SourceType", "SOURCES", "register_source", "check_spec_keys"]


class Source:
    """An ordered, shardable collection of records.

    Args:
      name: shown in error messages and reports.
      getter: ``getter(i)`` returns record ``i`` of the full (unsharded) source.
      length: number of records in the full source.
      indices: the positions this view covers (defaults to all).
      locate: ``locate(i)`` says where record ``i`` comes from, for error messages ("data.jsonl
        line 7"); defaults to "<name> record i".
    """

    def __init__(self, name: str, getter: Callable[[int], Record], length: int, indices: range | None = None,
                 locate: Callable[[int], str] | None = None):
        self.name = name
        self._getter = getter
        self._length = length
        self.indices = range(length) if indices is None else indices
        self._locate = locate

    def where(self, i: int) -> str:
        """Where record `i` of this view comes from (a file and line where the source knows it)."""
        return self._where(self.indices[i])

    def _where(self, j: int) -> str:
        return self._locate(j) if self._locate is not None else f"{self.name} record {j}"

    def map(self, fn: Callable[[Record, str], Record]) -> "Source":
        """This view with ``fn(record, where)`` applied to each record as it is read."""
        return Source(self.name, lambda j: fn(self._getter(j), self._where(j)), self._length,
                      self.indices, self._locate)

    @classmethod
    def from_records(cls, name: str, records: Sequence[Record],
                     locate: Callable[[int], str] | None = None) -> "Source":
        """A source over an in-memory list (generators, JSONL, tests)."""
        records = list(records)
        return cls(name, records.__getitem__, len(records), locate=locate)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Record:
        return self._getter(self.indices[i])

    def __iter__(self) -> Iterator[Record]:
        # Duplicate ids would silently merge items in later stages (answers are keyed by id), so
        # they are an error here, where the user can still fix the id column.
        seen: set[str] = set()
        for i in self.indices:
            record = self._getter(i)
            if record["id"] in seen:
                raise ConfigError(f"{self.name}: duplicate id {record['id']!r} (record {i}); "
                                  "choose a unique id_field or drop it to use positional ids")
            seen.add(record["id"])
            yield record

    def shard(self, process_index: int, process_count: int) -> "Source":
        """The records of host `process_index` of `process_count`: every `process_count`-th one,
        starting at `process_index`. Each record is in exactly one shard; shard sizes differ by
        at most one; the same on every host because it depends only on positions."""
        if process_count < 1 or not 0 <= process_index < process_count:
            raise ConfigError(f"shard({process_index}, {process_count}): need 0 <= process_index < process_count")
        return Source(f"{self.name}[shard {process_index}/{process_count}]", self._getter, self._length,
                      self.indices[process_index::process_count], self._locate)

    def take(self, n: int) -> "Source":
        """The first `n` records of this view."""
        return Source(self.name, self._getter, self._length, self.indices[:n], self._locate)

    def to_list(self) -> list[Record]:
        return list(self)

    def __repr__(self) -> str:
        return f"Source({self.name!r}, {len(self)} records)"


SourceFactory = Callable[[Mapping[str, Any]], Source]


@dataclasses.dataclass(frozen=True)
class SourceType:
    """A registered ``{"type": ...}``: its factory and the spec keys it accepts besides ``type``."""

    factory: SourceFactory
    keys: tuple[str, ...]


SOURCES: Registry[SourceType] = Registry("data source type", adapt=typed(
    SourceType, "decorate the factory with @jaxevo.data.register_source(name, keys=...)"))


def register_source(name: str, keys: Iterable[str]) -> Callable[[SourceFactory], SourceFactory]:
    """Register a factory for ``{"type": name, ...}`` specs. `keys` are the spec keys it accepts
    besides ``type``; `load_source` rejects any other key, so a typo is an error, not a default.
    A name registered twice is a `RegistryError`."""

    def deco(fn: SourceFactory) -> SourceFactory:
        SOURCES.add(name, SourceType(fn, tuple(keys)))
        return fn

    return deco


def check_spec_keys(spec: Mapping[str, Any], allowed: Iterable[str], what: str) -> None:
    unknown = sorted(set(spec) - set(allowed) - {"type"})
    if unknown:
        raise ConfigError(f"{what}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
