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
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from jaxevo.errors import WeightsError
from jaxevo.weights.convert import params_to_hf
from jaxevo.weights.hf import export_dtype, export_hf
from jaxevo.weights.load import CHECKPOINT_MARKER


class Checkpointer:
    def __init__(self, directory: str | os.PathLike, keep: int = 2, *, async_save: bool = True):
        self.dir = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max(1, int(keep)), create=True,
            enable_async_checkpointing=async_save)
        self._mngr = ocp.CheckpointManager(self.dir, options=options, item_names=("state", "meta"))

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._mngr.all_steps())

    def save(self, step: int, state: Any, meta: dict[str, Any], *, force: bool = True) -> bool:
        """Save (asynchronously when enabled); returns whether a save was started."""
        return self._mngr.save(int(step), args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=force)

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
        """(state, meta) of ``step`` (default: latest), laid out as ``abstract_state``'s shardings."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise WeightsError(f"no checkpoint in {self.dir}")
        out = self._mngr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        return out["state"], dict(out["meta"])

    def wait(self) -> None:
        self._mngr.wait_until_finished()

    def close(self) -> None:
        self._mngr.wait_until_finished()
        self._mngr.close()


def export_model(params, cfg, out_dir: str | os.PathLike, tokenizer=None,
                 info: dict[str, Any] | None = None, dtype: str = "float32") -> Path:
    """Write ``out_dir`` = ``jaxevo.json`` + ``model/`` (HF format), atomically.

    The directory is built under a temporary name and renamed into place, so a reader never sees
    a half-written export; an older export at ``out_dir`` is replaced only once the new one is
    complete. Multi-process: call on every process (params are gathered one tensor at a time);
    process 0 writes.
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
    export_hf(host, cfg, tmp / "model", tokenizer=tokenizer, dtype=dtype)
    marker = {"format": "jaxevo-checkpoint", "model_dir": "model", **(info or {})}
    (tmp / CHECKPOINT_MARKER).write_text(json.dumps(marker, indent=2, default=str))
    old = out.with_name(out.name + ".old-export")
    if out.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    return out
