"""One registry helper for every name a config can pick: losses, objectives, scorers, stages,
sources (and the checkers and rewards to come).

    SCORERS = Registry("scorer")

    @SCORERS.register("verifier")
    def verifier(group, params): ...

    SCORERS.get("verifier")        # the function; an unknown name is a ConfigError listing the known

A second registration under a taken name is an error (`RegistryError`), whatever module makes it:
two plugins that pick one name must not silently replace each other. `replace=True` is the one
explicit way to override an entry (tests that patch a scorer, for instance).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from jaxevo.errors import ConfigError, JaxevoError

T = TypeVar("T")


class RegistryError(JaxevoError):
    """A name was registered twice."""


class Registry(Mapping[str, T], Generic[T]):
    """name -> entry, with a clear error for a duplicate or an unknown name.

    It is a read-only `Mapping` (`name in REG`, `sorted(REG)`, `REG[name]`); entries are added only
    through `add` / `register`."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T, *aliases: str, replace: bool = False) -> T:
        """Register `entry` under `name` (and each alias). Returns `entry`."""
        for n in (name, *aliases):
            if not isinstance(n, str) or not n:
                raise RegistryError(f"{self.kind} names must be non-empty strings, got {n!r}")
            if n in self._entries and not replace:
                raise RegistryError(f"{self.kind} {n!r} is registered twice "
                                    f"(first by {_origin(self._entries[n])}, again by {_origin(entry)})")
        for n in (name, *aliases):
            self._entries[n] = entry
        return entry

    def register(self, name: str, *aliases: str, replace: bool = False) -> Callable[[T], T]:
        """Decorator form of `add`."""
        return lambda entry: self.add(name, entry, *aliases, replace=replace)

    def get(self, name: str, what: str | None = None) -> T:  # type: ignore[override]
        """The entry for `name`; a ConfigError naming `what` (default: the kind) and the known
        names otherwise."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ConfigError(f"unknown {what or self.kind} {name!r}; known: "
                              f"{', '.join(sorted(self._entries))}") from None

    def remove(self, name: str) -> None:
        """Drop `name` (tests that register a temporary entry clean up with this)."""
        self._entries.pop(name, None)

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {sorted(self._entries)})"


def _origin(entry) -> str:
    # A spec object (a loss's LossSpec, a Stage, a Scorer) is named by the function it wraps.
    for attr in ("fn", "run", "score", "factory"):
        inner = getattr(entry, attr, None)
        if callable(inner):
            entry = inner
            break
    mod = getattr(entry, "__module__", None) or type(entry).__module__
    name = getattr(entry, "__qualname__", None) or getattr(entry, "name", None) or type(entry).__name__
    return f"{mod}.{name}"
