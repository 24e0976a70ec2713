"""What config trained the steps of an ``out_dir``: ``config.yaml`` and ``config_changes.jsonl``.

A phase that resumes from a checkpoint compares its config with the recorded one (``config.yaml``,
the config in effect for the steps already trained):

- keys that cannot change the result (where and how often to log and checkpoint, the memory knobs,
  the mesh the state is laid out on) may change silently;
- ``RECORDED`` keys (the learning rate and clipping, to recover from a divergence; the length of
  the phase, to train longer) may change: the change and the step it takes effect at are appended
  to ``config_changes.jsonl`` and logged;
- any other change (the data, the model, the objective, the seed, ...) is refused with the keys
  that differ: the steps on disk were trained with something else.

A key that jaxevo added since the run started does not block a resume while it keeps its default.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Iterator

import yaml

from jaxevo.config import to_dict
from jaxevo.errors import ConfigError

log = logging.getLogger(__name__)

SAFE_PREFIXES = ("out_dir", "mesh", "micro_batch_size", "logprob_chunk", "vocab_chunk",
                 "objective.ref_batch_size", "log.", "checkpoint.")
RECORDED = ("optim.lr", "optim.clip_norm", "steps", "epochs")
CONFIG_NAME, CHANGES_NAME = "config.yaml", "config_changes.jsonl"
_MISSING = object()


def flatten(d: dict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``{"a": {"b": 1}}`` -> ``("a.b", 1)``; lists stay values."""
    for k, v in d.items():
        if isinstance(v, dict) and v:
            yield from flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def _safe(key: str) -> bool:
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in SAFE_PREFIXES)


def has_checkpoint(out_dir: Path) -> bool:
    """A finished Orbax step folder exists in ``out_dir/checkpoints`` (cheap: no Orbax)."""
    d = out_dir / "checkpoints"
    return d.is_dir() and any(p.name.isdigit() and p.is_dir() for p in d.iterdir())


def check_and_record(cfg, out_dir: Path, *, resuming: bool, defaults=None, write: bool = True) -> None:
    """Refuse a changed config on a resume (see the module doc); write ``config.yaml`` (and a
    ``config_changes.jsonl`` line for a recorded change). ``defaults``: the config class's
    default instance. ``write=False`` on the processes that write nothing."""
    new = {k: _plain(v) for k, v in flatten(to_dict(cfg))}
    path = out_dir / CONFIG_NAME
    if resuming and path.is_file():
        try:
            old = {k: _plain(v) for k, v in flatten(yaml.safe_load(path.read_text()) or {})}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML ({e}); it records the config that "
                              f"trained the checkpoints in {out_dir / 'checkpoints'}. Restore it, "
                              f"or use a new out_dir") from None
        dflt = {k: _plain(v) for k, v in flatten(to_dict(defaults))} if defaults is not None else {}
        changed = [k for k in sorted(set(old) | set(new))
                   if old.get(k, _MISSING) != new.get(k, _MISSING) and not _safe(k)
                   and not (k not in old and k in dflt and new.get(k) == dflt[k])]
        refused = [k for k in changed if k not in RECORDED]
        if refused:
            diff = ", ".join(f"{k}: {_show(old.get(k, _MISSING))} -> {_show(new.get(k, _MISSING))}"
                             for k in refused[:8])
            raise ConfigError(
                f"{out_dir} holds checkpoints trained with a different config ({path}); resuming "
                f"would mix them. Changed: {diff}. Use a new out_dir, revert the change, or start "
                f"over with checkpoint.resume=false. On a resume only {', '.join(RECORDED)} may "
                f"change (recorded in {CHANGES_NAME}), and logging/checkpoint/memory keys.")
        if changed and write:
            row = {"time": time.time(), "changed": {k: [old.get(k), new.get(k)] for k in changed}}
            with open(out_dir / CHANGES_NAME, "a") as f:
                f.write(json.dumps(row) + "\n")
        if changed:
            log.warning("resuming %s with changed %s (recorded in %s)", out_dir,
                        ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed),
                        out_dir / CHANGES_NAME)
    if write:
        if not resuming:  # a fresh start: the changes of an earlier run no longer apply
            (out_dir / CHANGES_NAME).unlink(missing_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        tmp.replace(path)


def note_resume_step(out_dir: Path, step: int) -> None:
    """Complete the last ``config_changes.jsonl`` line of this start with the step it resumed at."""
    p = out_dir / CHANGES_NAME
    if not p.is_file():
        return
    lines = p.read_text().splitlines()
    if lines:
        row = json.loads(lines[-1])
        if "from_step" not in row:
            row["from_step"] = step
            lines[-1] = json.dumps(row)
            p.write_text("\n".join(lines) + "\n")


def _plain(v: Any) -> Any:
    return [_plain(x) for x in v] if isinstance(v, (list, tuple)) else v


def _show(v: Any) -> str:
    return "(absent)" if v is _MISSING else repr(v)
