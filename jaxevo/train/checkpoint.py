"""Orbax checkpoints of the whole train state, and exported models as jaxevo checkpoint dirs.

`Checkpointer` wraps an Orbax `CheckpointManager`: each step directory holds ``state`` (the
`TrainState` pytree: params, optimizer state, step, RNG) and ``meta`` (JSON: the data position, the
config, anything else the loop adds). Orbax writes every step into a temporary directory and
renames it when complete, so an interrupted save never replaces (or masquerades as) a good
checkpoint; the last ``keep`` are kept. `restore` takes an abstract state whose leaves carry the
*target* shardings, so a state saved on one mesh restores onto any other.

`export_model` writes the trainable weights as a **jaxevo checkpoint directory** — a
``jaxevo.json`` marker plus a Hugging Face ``model/`` directory — which every command accepts as
``M`` (`jaxevo.weights.load.load_pretrained`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp

from jaxevo.errors import WeightsError
from jaxevo.outputs import OutputError, storage_cause
from jaxevo.weights.convert import params_to_hf
from jaxevo.weights.hf import export_dtype, export_hf
from jaxevo.weights.load import CHECKPOINT_MARKER
from jaxevo.weights.reward_hf import export_reward_hf


class Checkpointer:
    def __init__(self, directory: str | os.PathLike, keep: int = 2, *, async_save: bool = True):
        self.dir = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max(1, int(keep)), create=True,
            enable_async_checkpointing=async_save)
        self._mngr = ocp.CheckpointManager(self.dir, options=options, item_names=("state", "meta"))
        # Saves known complete (`confirmed`: the newest) and started but not yet known to be
        # (`pending`): a failed asynchronous save names the last complete one.
        self.confirmed: int | None = self.latest_step()
        self.pending: list[int] = []

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._mngr.all_steps())

    def save(self, step: int, state: Any, meta: dict[str, Any], *, force: bool = True) -> bool:
        """Save (asynchronously when enabled); returns whether a save was started."""
        started = self._mngr.save(int(step), args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=force)
        if started:
            self.pending.append(int(step))
        return started

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
        """(state, meta) of ``step`` (default: latest), laid out as ``abstract_state``'s shardings."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise WeightsError(f"no checkpoint in {self.dir}")
        out = self._mngr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        return out["state"], dict(out["meta"])

    def set_aside(self, steps: list[int], dest: Path) -> Path:
        """Move the folders of ``steps`` to ``dest/<step>`` (out of Orbax's sight, kept for a
        post-mortem) and forget them; returns ``dest``. Process 0 moves, every process reloads."""
        if jax.process_index() == 0:
            dest.mkdir(parents=True, exist_ok=True)
            for s in steps:
                target = dest / f"{s}-{int(time.time())}"
                if (self.dir / str(s)).exists():
                    os.replace(self.dir / str(s), target)
        self._mngr.reload()
        self.confirmed = self.latest_step()
        return dest

    def check(self) -> None:
        """Raise the error of a finished asynchronous save, if any."""
        busy = self._mngr.is_saving_in_progress()
        self._mngr.check_for_errors()
        if not busy and self.pending:  # every save started has ended without an error
            self.confirmed, self.pending = max(self.pending), []

    def wait(self) -> None:
        self._mngr.wait_until_finished()

    def close(self) -> None:
        self._mngr.wait_until_finished()
        self._mngr.close()


# ----------------------------------------------------------------------------- storage failures
def _storage_failure(ckpt: Checkpointer, e: BaseException) -> None:
    """Re-raise a disk-full / permission failure of a save as one `OutputError` line (and drop
    Orbax's half-written temporary folders); anything else propagates unchanged."""
    if storage_cause(e) is None:
        return
    if jax.process_index() == 0:
        for tmp in ckpt.dir.glob("*orbax-checkpoint-tmp*"):
            shutil.rmtree(tmp, ignore_errors=True)
    last = ckpt.confirmed
    where = (f"the last complete checkpoint is step {last}; rerun the same command to resume "
             f"from it" if last is not None else "no checkpoint was completed")
    raise OutputError.from_exc(e, ckpt.dir, "save a checkpoint in",
                               f"free space (or fix the permissions) there; {where}") from None


def save_checked(ckpt: Checkpointer, step: int, state: Any, meta: dict[str, Any]) -> None:
    """`Checkpointer.save`, after raising any failure of the previous (asynchronous) save."""
    try:
        ckpt.check()
        ckpt.save(step, state, meta)
    except Exception as e:  # noqa: BLE001 - storage errors become one line, the rest propagate
        _storage_failure(ckpt, e)
        raise


def check_saves(ckpt: Checkpointer) -> None:
    """Raise the failure of a finished asynchronous save now, not at the next save."""
    try:
        ckpt.check()
    except Exception as e:  # noqa: BLE001
        _storage_failure(ckpt, e)
        raise


def wait_checked(ckpt: Checkpointer) -> None:
    try:
        ckpt.wait()
        ckpt.check()
    except Exception as e:  # noqa: BLE001
        _storage_failure(ckpt, e)
        raise


def close_quietly(ckpt: Checkpointer) -> None:
    """Close on the way out; a failed save was already reported (or is the error in flight)."""
    try:
        ckpt.close()
    except Exception as e:  # noqa: BLE001
        if storage_cause(e) is None:
            raise


def export_model(params, cfg, out_dir: str | os.PathLike, tokenizer=None,
                 info: dict[str, Any] | None = None, dtype: str = "float32",
                 extra: Callable[[Path], Any] | None = None, head: Any = None) -> Path:
    """Write ``out_dir`` = ``jaxevo.json`` + ``model/`` (HF format), atomically; ``extra(dir)``
    writes more into the directory before it is renamed into place (LoRA: ``adapter/``).

    The directory is built under a temporary name and renamed into place, so a reader never sees
    a half-written export; an older export at ``out_dir`` is replaced only once the new one is
    complete. Multi-process: call on every process (params are gathered one tensor at a time);
    process 0 writes. ``head`` (a reward model's score head [E, 1], replicated; ``params`` then
    are its decoder): ``model/`` is the HF `*ForSequenceClassification` (`export_reward_hf`).
    """
    out = Path(out_dir).absolute()
    if jax.process_index() != 0:
        # Take part in the per-tensor gathers of `params_to_hf` (collectives), write nothing: no
        # host ever holds more than one gathered tensor, never the whole model.
        for _ in params_to_hf(params, cfg, export_dtype(dtype)):
            pass
        return out
    host = params  # gathered tensor by tensor while writing
    tmp = out.with_name(out.name + ".tmp-export")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if head is not None:
        export_reward_hf({"decoder": host, "score": head}, cfg, tmp / "model", tokenizer, dtype=dtype)
    else:
        export_hf(host, cfg, tmp / "model", tokenizer=tokenizer, dtype=dtype)
    if extra is not None:
        extra(tmp)
    marker = {"format": "jaxevo-checkpoint", "model_dir": "model", **(info or {})}
    (tmp / CHECKPOINT_MARKER).write_text(json.dumps(marker, indent=2, default=str))
    old = out.with_name(out.name + ".old-export")
    if out.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    return out
