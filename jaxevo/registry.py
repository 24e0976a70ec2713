"""One registry helper for every name a config can pick: losses, objectives, scorers, stages,
sources, checkers and rewards.

    SCORERS = Registry("scorer")

    @SCORERS.register("verifier")
    def verifier(group, params): ...

    SCORERS.get("verifier")        # the function; an unknown name is a ConfigError listing the known
    SCORERS.get("my_pkg.mod:fn")   # the user's code (jaxevo.plugins): imported, checked, adapted

A `package.module:attribute` name is resolved on first use and cached (not added to the names):
an object the registry already holds (or whose function it wraps, e.g. a function decorated with
`@register_scorer`) is that entry; anything else goes through the registry's
`adapt(obj, ref, where)`, which wraps a plain function into the registry's entry type or refuses
it with a ConfigError saying what is expected. Without `adapt`, a plain callable is the entry.

A second registration under a taken name is an error (`RegistryError`), whatever module makes it:
two plugins that pick one name must not silently replace each other. `replace=True` is the one
explicit way to override an entry (tests that patch a scorer, for instance).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from jaxevo import plugins
from jaxevo.errors import ConfigError, JaxevoError

T = TypeVar("T")


class RegistryError(JaxevoError):
    """A name was registered twice."""


class Registry(Mapping[str, T], Generic[T]):
    """name -> entry, with a clear error for a duplicate or an unknown name.

    It is a read-only `Mapping` (`name in REG`, `sorted(REG)`, `REG[name]`); entries are added only
    through `add` / `register`."""

    def __init__(self, kind: str, adapt: Callable[[object, str, str], T] | None = None):
        self.kind = kind
        self.adapt = adapt
        self._entries: dict[str, T] = {}
        self._refs: dict[str, T] = {}  # resolved `module:attr` names

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
            pass
        if plugins.is_reference(name):
            if name not in self._refs:
                self._refs[name] = self._from_reference(name, what or self.kind)
            return self._refs[name]
        raise ConfigError(f"unknown {what or self.kind} {name!r}; known: "
                          f"{', '.join(sorted(self._entries))} (or your own as 'package.module:attribute')")

    def _from_reference(self, ref: str, where: str) -> T:
        obj = plugins.resolve(ref, where)
        for entry in self._entries.values():
            if obj is entry or obj is _wrapped(entry):
                return entry
        if self.adapt is not None:
            return self.adapt(obj, ref, f"{where} {ref!r}")
        if not callable(obj):
            raise ConfigError(f"{where} {ref!r}: a {type(obj).__name__}, not a function")
        return obj  # type: ignore[return-value]

    def remove(self, name: str) -> None:
        """Drop `name` (tests that register a temporary entry clean up with this)."""
        self._entries.pop(name, None)
        self._refs.clear()  # a reference may have resolved to it

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {sorted(self._entries)})"


def _wrapped(entry):
    """The function a spec object (a loss's LossSpec, a Stage, a Scorer...) wraps, else None."""
    for attr in ("fn", "run", "score", "factory", "check"):
        inner = getattr(entry, attr, None)
        if callable(inner):
            return inner
    return None


def _origin(entry) -> str:
    # A spec object is named by the function it wraps.
    entry = _wrapped(entry) or entry
    mod = getattr(entry, "__module__", None) or type(entry).__module__
    name = getattr(entry, "__qualname__", None) or getattr(entry, "name", None) or type(entry).__name__
    return f"{mod}.{name}"


def typed(entry_type: type, hint: str) -> Callable[[object, str, str], object]:
    """An `adapt` for a registry of `entry_type` objects that have no plain-function form: the
    object itself, or a ConfigError saying what to give instead (`hint`)."""
    def adapt(obj: object, ref: str, where: str) -> object:
        if isinstance(obj, entry_type):
            return obj
        raise ConfigError(f"{where} is a {type(obj).__name__}, not a {entry_type.__name__}; {hint}")
    return adapt
