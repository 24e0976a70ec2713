"""The run directory: where every stage writes its output before the next one starts.

    runs/NAME/
      config.yaml            the resolved config of the run (what `evolve` was started with)
      manifest.json          config hash, per-round and per-stage status, timings, metrics, the
                             CPU paths the stages ran on (`cpu_paths`)
      round_001/
        generate/...         one folder per stage, named by stage, written to a tmp name then renamed
        ...                  (a training stage's folder holds its exported model, train/final)

A stage is done when its folder exists under its final name *and* the manifest says so; both
are written atomically (tmp + rename), so a run killed anywhere resumes at the first unfinished
stage and never reads half-written output. Inside a stage, training resumes from its Orbax
checkpoints and sampling from its journals (`samples_KK.jsonl`, see `journal`), which stay in the
stage's folder as a record of every completion's tokens and log-probs.

Stage folders are named by stage, not by position: a recipe that gains a stage keeps its other
folders. A run directory of an older jaxevo (folders `NN_name`, numbered by the fixed order of
eleven stages it had) resumes after `open` renames its finished stage folders and the paths in its
manifest; one with an unfinished stage of that layout (`NN_name.partial`) is refused with the
folder to delete (see `_migrate_numbered`).

Multi-host: every process runs every stage (sampling and training are collective programs) and
reads the same files, but only process 0 writes them (`write_jsonl`, `atomic_write_text`, the
manifest, the stage renames); the other processes wait at a barrier after each manifest update.
So the run directory must be on storage every host sees (a GCS bucket mounted with gcsfuse, a
Filestore/NFS share), as Orbax's multi-host checkpoints already require.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import yaml

from jaxevo import distributed
from jaxevo.errors import ConfigError

log = logging.getLogger(__name__)

# Keys that may change between a run and its resume without mixing results: they change nothing
# a stage writes (only where, how far, how fast, how it looks, and what disk it keeps).
RESUME_SAFE = ("run.dir", "run.rounds", "run.progress", "run.keep_checkpoints",
               "sft.checkpoint.final", "preference.checkpoint.final", "sample.journal_rows",
               "sample.continuous", "eval.batch_size")
# Keys that may change on a resume, to recover from a divergence: the stages still to run use the
# new value, the finished ones keep what they were trained with; the manifest records the change
# and which stages were finished at that point (`config_changes`).
RESUME_RECORDED = ("sft.optim.lr", "sft.optim.clip_norm", "preference.optim.lr",
                   "preference.optim.clip_norm")


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` atomically (process 0 only; a no-op on the other processes)."""
    if not distributed.is_main():
        return
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    """Write `obj` as indented JSON (process 0 only; a no-op on the other processes)."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=str))


def write_jsonl(path: Path, records: Iterable[dict]) -> int:
    """Write records atomically (process 0 only; the others just count); returns the count."""
    if not distributed.is_main():
        return sum(1 for _ in records)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    n = 0
    with open(tmp, "w") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def read_jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def config_hash(config: dict[str, Any], ignore: Iterable[str] = RESUME_SAFE) -> str:
    """Hash of the config with the resume-safe keys removed."""
    flat = dict(_flatten(config))
    for k in ignore:
        flat.pop(k, None)
    return hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _flatten(d: dict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _flatten(v, key + ".")
        else:
            yield key, v


_MISSING = object()


class RunDir:
    """Bookkeeping of one run: stage folders, the manifest, resume checks."""

    def __init__(self, root: str | Path, config: dict[str, Any], defaults: dict[str, Any] | None = None):
        """`defaults`: the config class's defaults (as a dict); a key that a newer jaxevo added
        since the run started does not block a resume while it keeps its default value."""
        self.root = Path(root)
        self.config = config
        self.defaults = dict(_flatten(defaults or {}))
        self.hash = config_hash(config)
        self.manifest_path = self.root / "manifest.json"

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> "RunDir":
        """Create the run or check that `config` may resume it (refuses a changed config); an
        older run directory with numbered stage folders is brought to the named layout first."""
        if distributed.is_main():
            self.root.mkdir(parents=True, exist_ok=True)
        distributed.barrier("jaxevo_rundir_open")
        if distributed.broadcast(self.manifest_path.exists()):  # one answer for every process
            m = self.manifest()
            old = self._recorded_config() if m["config_hash"] != self.hash else {}
            if m["config_hash"] != self.hash and not self._only_new_defaults(old):
                new = dict(_flatten(self.config))
                changed = [k for k in set(old) | set(new) if k not in RESUME_SAFE
                           and old.get(k, _MISSING) != new.get(k, _MISSING)]
                if not all(k in RESUME_RECORDED for k in changed):
                    diff = _diff({k: v for k, v in old.items() if k not in RESUME_RECORDED},
                                 {k: v for k, v in new.items() if k not in RESUME_RECORDED})
                    raise ConfigError(
                        f"{self.root} was started with a different config; resuming would mix "
                        f"results. Changed keys: {diff}. Use a new run directory (run.dir=...), or "
                        f"revert the change. On a resume {', '.join(RESUME_SAFE)} may change, and "
                        f"{', '.join(RESUME_RECORDED)} (for the stages not finished yet; "
                        f"recorded in manifest.json).")
                self._record_change(m, old, new, sorted(changed))
            self._migrate_numbered()
        else:
            atomic_write_text(self.root / "config.yaml", yaml.safe_dump(self.config, sort_keys=False))
            self._write({"config_hash": self.hash, "created": time.time(), "rounds": {}})
        return self

    def _only_new_defaults(self, old: dict[str, Any]) -> bool:
        """True when every key that differs from the run's config.yaml is one it did not have
        (added to jaxevo since) and is at its default value."""
        new = dict(_flatten(self.config))
        changed = [k for k in set(old) | set(new)
                   if k not in RESUME_SAFE and old.get(k, _MISSING) != new.get(k, _MISSING)]
        return all(k not in old and k in self.defaults and new.get(k, _MISSING) == self.defaults[k]
                   for k in changed)

    def _recorded_config(self) -> dict[str, Any]:
        path = self.root / "config.yaml"
        try:
            return dict(_flatten(yaml.safe_load(path.read_text()) or {}))
        except (OSError, yaml.YAMLError) as e:
            why = " ".join(str(e).split())[:300]  # YAML errors span lines: one line here
            raise ConfigError(f"{path} cannot be read ({type(e).__name__}: {why}); it records the "
                              f"config this run was started with. Restore it, or start a new run "
                              f"directory (run.dir=...)") from None

    def _record_change(self, m: dict[str, Any], old: dict, new: dict, changed: list[str]) -> None:
        """Accept a change of `RESUME_RECORDED` keys: the manifest lists it with the stages
        finished before it, the config and its hash become the new ones."""
        done = [f"{r}/{n}" for r, rd in sorted(m["rounds"].items(), key=lambda x: int(x[0]))
                for n, st in rd.get("stages", {}).items() if st.get("done")]
        m.setdefault("config_changes", []).append({
            "time": time.time(), "changed": {k: [old.get(k), new.get(k)] for k in changed},
            "finished_before": done})
        m["config_hash"] = self.hash
        atomic_write_text(self.root / "config.yaml", yaml.safe_dump(self.config, sort_keys=False))
        self._write(m)
        log.warning("resuming %s with changed %s: the stages still to run use the new value%s",
                    self.root, ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed),
                    f"; {len(done)} finished stages keep the old one (recorded in manifest.json)"
                    if done else "")

    def manifest(self) -> dict[str, Any]:
        try:
            return json.loads(self.manifest_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(
                f"{self.manifest_path} cannot be read ({type(e).__name__}: {e}): the record of "
                f"which stages of this run are finished is damaged. Restore it from a copy, or "
                f"start a new run directory (run.dir=...); the stage folders are intact") from None

    def _write(self, m: dict[str, Any]) -> None:
        """Process 0 writes the manifest; every process then waits until it is in place."""
        atomic_write_text(self.manifest_path, json.dumps(m, indent=1, default=str))
        distributed.barrier("jaxevo_manifest")

    # ------------------------------------------------------------------ stages
    def round_dir(self, r: int) -> Path:
        return self.root / f"round_{r:03d}"

    def stage_dir(self, r: int, name: str) -> Path:
        return self.round_dir(r) / name

    def is_done(self, r: int, name: str) -> bool:
        st = self.manifest()["rounds"].get(str(r), {}).get("stages", {}).get(name)
        return bool(st and st.get("done"))

    def stage_info(self, r: int, name: str) -> dict[str, Any]:
        return self.manifest()["rounds"].get(str(r), {}).get("stages", {}).get(name, {})

    def begin_stage(self, r: int, name: str) -> Path:
        """The tmp folder for the stage's outputs (leftovers of a killed attempt are kept: a
        stage resumes from them where it can, training from its checkpoints, sampling from its
        journals)."""
        tmp = self.stage_dir(r, name).with_name(f"{name}.partial")
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp

    def finish_stage(self, r: int, name: str, info: dict[str, Any]) -> Path:
        """Rename the stage's tmp folder to its final name and mark it done in the manifest."""
        final = self.stage_dir(r, name)
        tmp = final.with_name(f"{name}.partial")
        # Every process has finished its part of the stage (e.g. an Orbax save) before the rename.
        distributed.barrier("jaxevo_stage_end")
        if distributed.is_main():
            if final.exists():  # a previous attempt renamed but died before the manifest write
                shutil.rmtree(final)
            os.replace(tmp, final)
        m = self.manifest()
        rd = m["rounds"].setdefault(str(r), {"stages": {}})
        rd["stages"][name] = {"done": True, "finished": time.time(), **info}
        self._write(m)
        return final

    def set_info(self, **info) -> None:
        """Run-level manifest entries (e.g. which model final_model was exported from)."""
        m = self.manifest()
        m.update(info)
        self._write(m)

    def set_round_info(self, r: int, **info) -> None:
        m = self.manifest()
        m["rounds"].setdefault(str(r), {"stages": {}}).update(info)
        self._write(m)

    # ------------------------------------------------------------------ older layout
    def _migrate_numbered(self) -> None:
        """Rename the `round_*/NN_name` stage folders of an older jaxevo to `round_*/name`, and
        the paths in the manifest with them. Refused (nothing renamed) when a folder is not what
        that jaxevo wrote (its number is not the stage's place in the fixed order) or a stage of
        it is unfinished (`NN_name.partial`: its journals and checkpoints name the old paths)."""
        found = [(d, m) for d in sorted(self.root.glob("round_*/*"))
                 if d.is_dir() and (m := _NUMBERED.fullmatch(d.name))]
        if not found:
            return
        for d, m in found:
            index, name, partial = int(m.group(1)), m.group(2), m.group(3)
            if partial:
                raise ConfigError(
                    f"{d} is an unfinished stage of a run directory written by an older jaxevo "
                    f"(numbered stage folders). To resume here, delete that folder (the stage then "
                    f"runs again from its start) and run the same command again; or finish the run "
                    f"with the jaxevo version that started it.")
            if _OLD_ORDER.get(name) != index or (d.parent / name).exists():
                raise ConfigError(
                    f"{d} does not match the numbered layout of an older jaxevo "
                    f"({', '.join(f'{i:02d}_{n}' for n, i in _OLD_ORDER.items())}) or its stage "
                    f"folder {d.parent / name} exists too. Rename each round_*/NN_name folder to "
                    f"round_*/name and the paths in manifest.json by hand, or start a new run "
                    f"directory (run.dir=...).")
        distributed.barrier("jaxevo_migrate")  # every process checked the old layout before a rename
        if distributed.is_main():
            for d, m in found:
                os.replace(d, d.parent / m.group(2))
        self._write(_renamed_paths(self.manifest()))


# The stage folders of jaxevo before stages were named by stage: NN = place in its fixed order.
_OLD_ORDER = {n: i for i, n in enumerate(
    ("meta", "prompts", "generate", "feedback", "refine", "score", "data", "sft", "preference",
     "control", "eval", "gate"))}
_NUMBERED = re.compile(r"(\d\d)_([a-z_]+?)(\.partial)?")


def _renamed_paths(x: Any) -> Any:
    """`x` (a manifest) with every `round_NNN/KK_name` path segment written `round_NNN/name`."""
    if isinstance(x, dict):
        return {k: _renamed_paths(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_renamed_paths(v) for v in x]
    if isinstance(x, str):
        return re.sub(r"(round_\d{3})/\d\d_([a-z_]+)", r"\1/\2", x)
    return x


def _diff(old: dict, new: dict) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys[:8]) or "(none)"
