"""Typed configuration: frozen dataclasses read from YAML plus ``key=value`` dotted overrides.

One generic loader serves every command (`jaxevo train` uses `jaxevo.train.config.TrainConfig`, the
round driver its own sections):

    cfg = load_config(TrainConfig, "configs/train_dpo_demo.yaml", ["optim.lr=1e-6", "steps=20"])

Rules:
* A section is a nested dataclass; a YAML mapping fills it, keys missing from the YAML keep their
  defaults. Fields without a default are required.
* **Unknown keys are errors** that name the key (with its dotted path) and list the valid ones.
* Values are coerced to the annotated type: ``"1e-5"`` -> float, ``"true"``/``"no"`` -> bool,
  ``"[1, -1, 1]"`` or ``"1,-1,1"`` -> tuple[int, ...], ``"null"``/``"none"`` -> None for optional
  fields, ``Literal[...]`` values are checked. A value that cannot be coerced is an error naming the key.
* Overrides are parsed as YAML scalars/flow values (``a.b=[1,2]``, ``a.c={x: 1}``) and applied on
  top of the file, so they win.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping, TypeVar

import yaml

from jaxevo.errors import ConfigError

T = TypeVar("T")

__all__ = [
    "load_config",
    "from_dict",
    "to_dict",
    "parse_overrides",
    "apply_overrides",
    "dump_config",
]

_TRUE = {"true", "yes", "on", "1", "y"}
_FALSE = {"false", "no", "off", "0", "n"}


def load_config(cls: type[T], path: str | Path | None = None,
                overrides: Iterable[str] = (), *, data: Mapping[str, Any] | None = None) -> T:
    """Build ``cls`` (a dataclass) from a YAML file and/or a mapping, then ``key=value`` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: invalid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping, got {type(loaded).__name__}")
        raw = loaded
    if data is not None:
        raw = _deep_merge(raw, dict(data))
    raw = apply_overrides(raw, overrides)
    return from_dict(cls, raw)


def parse_overrides(overrides: Iterable[str]) -> list[tuple[list[str], Any]]:
    """``["a.b=1", "c=x"]`` -> ``[(["a", "b"], 1), (["c"], "x")]`` (values parsed as YAML)."""
    out = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. optim.lr=1e-5)")
        key, value = item.split("=", 1)
        key = key.strip()
        if not key or any(not k for k in key.split(".")):
            raise ConfigError(f"override {item!r}: empty key")
        try:
            parsed = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            parsed = value
        out.append((key.split("."), parsed))
    return out


def apply_overrides(raw: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of ``raw`` with the dotted overrides set (intermediate mappings are created)."""
    result = _deep_merge({}, dict(raw))
    for keys, value in parse_overrides(overrides):
        node = result
        for i, k in enumerate(keys[:-1]):
            nxt = node.get(k)
            if nxt is None:
                nxt = node[k] = {}
            elif not isinstance(nxt, dict):
                raise ConfigError(f"override {'.'.join(keys)}: {'.'.join(keys[:i + 1])} is not a section")
            node = nxt
        node[keys[-1]] = value
    return result


def from_dict(cls: type[T], raw: Mapping[str, Any] | None, where: str = "") -> T:
    """Recursively build dataclass ``cls`` from a mapping, checking keys and coercing types."""
    if raw is None:
        raw = {}
    if dataclasses.is_dataclass(raw) and isinstance(raw, cls):
        return raw
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where or 'config'}: expected a mapping of keys for {cls.__name__}, "
                          f"got {type(raw).__name__} {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in raw if k not in fields]
    if unknown:
        k = unknown[0]
        path = f"{where}.{k}" if where else str(k)
        close = difflib.get_close_matches(str(k), list(fields), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown config key {path!r}{hint}; valid keys"
                          f"{' of ' + where if where else ''}: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, f in fields.items():
        path = f"{where}.{name}" if where else name
        if name in raw:
            kwargs[name] = _coerce(raw[name], hints[name], path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            if dataclasses.is_dataclass(hints[name]):
                kwargs[name] = from_dict(hints[name], {}, path)
            else:
                raise ConfigError(f"missing required config key {path!r}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from None


def _coerce(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("null", "none", "~")):
            if type(None) in args:
                return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, path)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else
                          f"{path}: {value!r} matches none of {_type_name(tp)}")
    if origin is typing.Literal:
        for a in args:
            if value == a or (isinstance(value, str) and str(a) == value):
                return a
        raise ConfigError(f"{path}: {value!r} is not one of {list(args)}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if value is None:
        raise ConfigError(f"{path}: null is not allowed here (expected {_type_name(tp)})")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, str)) and str(value).strip().lower() in _TRUE | _FALSE:
            return str(value).strip().lower() in _TRUE
        raise ConfigError(f"{path}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                f = float(value)
                if f.is_integer():
                    return int(f)
            except ValueError:
                pass
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{path}: expected a string, got {value!r}")
    if origin in (tuple, list):
        if isinstance(value, str):
            s = value.strip()
            try:
                value = yaml.safe_load(s) if s.startswith("[") else [v.strip() for v in s.split(",") if v.strip()]
            except yaml.YAMLError as e:
                raise ConfigError(f"{path}: {s!r} is not a YAML list ({getattr(e, 'problem', e)}); in "
                                  "double quotes a backslash starts an escape: write a regular "
                                  "expression in single quotes, e.g. ['\\d+\\.']") from e
        if not isinstance(value, (list, tuple)):
            value = [value]
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise ConfigError(f"{path}: expected {len(args)} values, got {list(value)!r}")
            return tuple(_coerce(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, vt, f"{path}.{k}") for k, v in value.items()}
    return value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        elif isinstance(v, Mapping):
            out[k] = _deep_merge({}, v)
        else:
            out[k] = v
    return out


def to_dict(obj: Any) -> Any:
    """A dataclass (recursively) as plain JSON/YAML-serialisable Python values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    return obj


def dump_config(obj: Any, path: str | Path) -> Path:
    """Write a config as YAML (``.yaml``/``.yml``) or JSON; reloadable with :func:`load_config`."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    d = to_dict(obj)
    p.write_text(yaml.safe_dump(d, sort_keys=False) if p.suffix in (".yaml", ".yml")
                 else json.dumps(d, indent=2))
    return p
