"""The user's own code: plugin modules and `module:attribute` references.

    load_plugins(["my_pkg.rewards", "path/to/my_rewards.py"])  # imported once; their registrations count
    resolve("my_pkg.rewards:brevity", "score.rewards[0].fn")    # the object, or a ConfigError
    check_signature(fn, ("prompts", "completions"), "score.rewards[0].fn")

A plugin is a module name (found on the import path: `PYTHONPATH`, installed packages) or the
path of a `.py` file. A relative path is looked up in the current directory, then in the config
files' folders given as `base_dir` so far. A reference `module:attr` names the module the same way (a module
name, a `.py` path, or the file name without `.py` of a plugin file already loaded) and an
attribute in it (dotted for a nested one, `mod:Class.method`).

Every failure is a `ConfigError` naming the config key (`where`) and what to fix, raised before
any work starts: a module that cannot be found, one that fails while importing (its traceback is
kept as the cause), a missing attribute, and a callable whose signature cannot take the call.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable, Sequence

from jaxevo.errors import ConfigError

__all__ = ["load_plugins", "import_plugin", "resolve", "is_reference", "check_signature"]

_FILES: dict[Path, ModuleType] = {}  # .py files imported so far (a file is executed once)
_STEMS: dict[str, ModuleType] = {}  # their file names without .py, so `my_rewards:fn` finds them
_BASE_DIRS: list[Path] = []  # config folders seen: a later lookup of the same relative path finds it


def is_reference(name: Any) -> bool:
    """Whether a config value names user code (`module:attr`) rather than a registered entry."""
    return isinstance(name, str) and ":" in name and not name.startswith(":") and not name.endswith(":")


def load_plugins(specs: Iterable[str], where: str = "plugins", base_dir: str | Path | None = None) -> list[ModuleType]:
    """Import every plugin in `specs` (module names or .py paths), in order; a module already
    imported is not imported again, so naming one twice (config and --plugin) is harmless."""
    if isinstance(specs, str):
        specs = [specs]
    return [import_plugin(s, f"{where}[{i}]", base_dir) for i, s in enumerate(specs)]


def import_plugin(spec: str, where: str = "plugin", base_dir: str | Path | None = None) -> ModuleType:
    """One plugin: a module name or the path of a .py file (see the module doc)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"{where}: a plugin is a module name or a path to a .py file, got {spec!r}")
    spec = spec.strip()
    if spec in _STEMS and spec not in sys.modules:
        return _STEMS[spec]
    if spec.endswith(".py") or "/" in spec or "\\" in spec:
        return _import_file(spec, where, base_dir)
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as e:
        if e.name is not None and (spec == e.name or spec.startswith(e.name + ".")):
            raise ConfigError(
                f"{where}: cannot import module {spec!r}: no module named {e.name!r}. Put its folder "
                f"on PYTHONPATH, install its package, or give the path of its .py file") from None
        raise ConfigError(f"{where}: module {spec!r} failed to import: it needs {e.name!r}, "
                          f"which is not installed") from e
    except Exception as e:  # the user's module raised while importing
        raise ConfigError(f"{where}: module {spec!r} raised while importing: "
                          f"{type(e).__name__}: {e}") from e


def _import_file(spec: str, where: str, base_dir: str | Path | None) -> ModuleType:
    path = Path(spec).expanduser()
    if base_dir is not None and Path(base_dir).resolve() not in _BASE_DIRS:
        _BASE_DIRS.append(Path(base_dir).resolve())
    candidates = [path] if path.is_absolute() else [Path.cwd() / path] + [d / path for d in _BASE_DIRS]
    found = next((p.resolve() for p in candidates if p.is_file()), None)
    if found is None:
        looked = ", ".join(str(p) for p in candidates)
        raise ConfigError(f"{where}: plugin file not found: {spec} (looked at {looked})")
    if found.suffix != ".py":
        raise ConfigError(f"{where}: a plugin file must be a .py file, got {found}")
    if found in _FILES:
        return _FILES[found]
    # A unique module name per file: two plugins called rewards.py in different folders must not
    # replace each other in sys.modules.
    name = f"jaxevo_plugin_{found.stem}_{hashlib.sha1(str(found).encode()).hexdigest()[:8]}"
    mspec = importlib.util.spec_from_file_location(name, found)
    module = importlib.util.module_from_spec(mspec)
    sys.modules[name] = module  # before executing: dataclasses and pickling look the module up
    try:
        mspec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise ConfigError(f"{where}: plugin file {found} raised while importing: "
                          f"{type(e).__name__}: {e}") from e
    _FILES[found] = module
    _STEMS[found.stem] = module  # the latest file of that name
    return module


def resolve(ref: str, where: str, base_dir: str | Path | None = None) -> Any:
    """The object `module:attr` names (module: a module name or a .py path)."""
    if not is_reference(ref):
        raise ConfigError(f"{where}: {ref!r} is not a reference of the form 'package.module:attribute'")
    mod_name, _, attr = ref.rpartition(":")
    module = import_plugin(mod_name, where, base_dir)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n in vars(module) if not n.startswith("_"))
            raise ConfigError(f"{where}: module {mod_name!r} has no attribute {attr!r}; "
                              f"it defines: {', '.join(public) or '(nothing public)'}")
        obj = getattr(obj, part)
    return obj


def check_signature(fn: Any, args: Sequence[str], where: str, *, kwargs: bool = False,
                    by_name: bool = False, partial: bool = False, expected: str | None = None) -> None:
    """Raise a ConfigError unless `fn` can be called with `args` (positionally, or by name with
    `by_name`) and, with `kwargs`, any extra keyword arguments. With `partial`, further required
    parameters are allowed (a reward function's named columns, supplied at call time).
    `expected` is the signature shown to the user."""
    shown = expected or f"fn({', '.join(args)}{', **kwargs' if kwargs else ''})"
    if not callable(fn):
        raise ConfigError(f"{where}: {fn!r} is a {type(fn).__name__}, not a function; expected {shown}")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # a builtin without a signature: trust it
    named = {a: None for a in args} if by_name else {}
    probe = {"_jaxevo_probe_column": None} if kwargs else {}
    try:
        bind = sig.bind_partial if partial else sig.bind
        bind(*([] if by_name else [None] * len(args)), **named, **probe)
    except TypeError:
        raise ConfigError(f"{where}: {_name(fn)}{sig} cannot be called as {shown}") from None


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__
