"""Multi-host (multi-controller) helpers on top of `jax.distributed` — no home-made cluster layer.

JAX runs one Python process per host; every process runs the same program, owns its local devices
and sees *global* arrays sharded over all devices. What a round needs from the host side:

    initialize(...)            start the runtime (TPU pod: no arguments; CPU tests: coordinator etc.)
    is_main() / main_only      process 0 writes JSONL, reports, manifests; everyone else skips
    broadcast(obj)             any picklable Python object from process 0 to all (e.g. samples)
    barrier(name)              wait for every process (e.g. after process 0 wrote a file)

Everything degrades to a no-op on a single process, so library code calls these unconditionally.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import pickle
from typing import Any, Callable, Sequence, TypeVar

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxevo.errors import ConfigError

log = logging.getLogger(__name__)
T = TypeVar("T")

# Environment variables read by `initialize` when no explicit arguments are given (our names; the
# TPU runtime needs none of them: on a Cloud TPU VM jax finds its peers from the metadata server).
ENV_COORDINATOR = "JAXEVO_COORDINATOR"  # host:port of process 0
ENV_NUM_PROCESSES = "JAXEVO_NUM_PROCESSES"
ENV_PROCESS_ID = "JAXEVO_PROCESS_ID"


def _on_tpu_vm() -> bool:
    """Cloud TPU VMs set TPU_* variables (worker id, accelerator type) for every worker."""
    return any(k in os.environ for k in ("TPU_WORKER_ID", "TPU_ACCELERATOR_TYPE",
                                         "TPU_WORKER_HOSTNAMES", "CLOUD_TPU_TASK_ID"))


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, local_device_ids: Sequence[int] | None = None,
               cpu_collectives: str | None = "gloo", force: bool = False) -> bool:
    """Start `jax.distributed` if this is (or is configured as) a multi-process run.

    Order of precedence: explicit arguments > ``JAXEVO_COORDINATOR`` / ``JAXEVO_NUM_PROCESSES`` /
    ``JAXEVO_PROCESS_ID`` > the Cloud TPU environment (``jax.distributed.initialize()`` with no
    arguments discovers the pod's workers) > nothing (single process, returns False).

    Must run before anything touches a JAX backend (``jax.devices()``, creating an array).
    ``cpu_collectives``: the CPU cross-process collectives implementation ("gloo" in JAX 0.4.27+;
    "mpi" needs an MPI library); without one, CPU computations spanning processes fail.
    Returns True when the distributed runtime is (now) initialized.
    """
    if _initialized():
        return True
    coordinator = coordinator or os.environ.get(ENV_COORDINATOR)
    if num_processes is None and os.environ.get(ENV_NUM_PROCESSES):
        num_processes = int(os.environ[ENV_NUM_PROCESSES])
    if process_id is None and os.environ.get(ENV_PROCESS_ID):
        process_id = int(os.environ[ENV_PROCESS_ID])
    if coordinator is None and not (_on_tpu_vm() or force):
        return False
    if coordinator is not None and (num_processes is None or process_id is None):
        raise ConfigError(f"distributed: coordinator={coordinator!r} needs num_processes and "
                          f"process_id too (got {num_processes}, {process_id}); set "
                          f"{ENV_NUM_PROCESSES} and {ENV_PROCESS_ID}")
    if cpu_collectives:
        # Read only by the CPU backend; harmless on TPU/GPU.
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    kw: dict[str, Any] = {}
    if coordinator is not None:
        kw = dict(coordinator_address=coordinator, num_processes=num_processes,
                  process_id=process_id)
    if local_device_ids is not None:
        kw["local_device_ids"] = list(local_device_ids)
    jax.distributed.initialize(**kw)
    log.info("jax.distributed: process %d/%d, %d local / %d global devices",
             jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count())
    return True


def _initialized() -> bool:
    try:
        from jax._src import distributed as _d  # private API: if it moves, only this check fails

        return _d.global_state.client is not None
    except Exception:  # private API moved: assume not initialized, initialize() will tell
        return False


def shutdown() -> None:
    if _initialized():
        jax.distributed.shutdown()


# ------------------------------------------------------------------------- who does what
def process_index() -> int:
    return jax.process_index()


def process_count() -> int:
    return jax.process_count()


def is_main() -> bool:
    """True on process 0: the one that writes files, logs and shows progress bars."""
    return jax.process_index() == 0


def main_only(fn: Callable[..., T]) -> Callable[..., T | None]:
    """Decorator: run ``fn`` on process 0 only (returns None elsewhere). For side effects such as
    writing JSONL/reports; the other processes must not wait on its result (use `broadcast`)."""
    @functools.wraps(fn)
    def wrapper(*a, **kw):
        return fn(*a, **kw) if is_main() else None
    return wrapper


def barrier(name: str = "jaxevo_barrier", timeout_ms: int = 600_000) -> None:
    """Block until every process reached the barrier ``name`` (no-op on one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


# ------------------------------------------------------------------------- same data everywhere
def broadcast(obj: T) -> T:
    """Process 0's picklable ``obj`` on every process (e.g. generated samples, a scored data set),
    so all hosts continue from exactly the same data. Sent as a uint8 array through
    `multihost_utils.broadcast_one_to_all`: first its length, then the padded bytes."""
    if jax.process_count() == 1:
        return obj
    payload = np.frombuffer(pickle.dumps(obj), np.uint8) if is_main() else np.zeros(0, np.uint8)
    n = int(multihost_utils.broadcast_one_to_all(np.asarray(payload.size, np.int64)))
    buf = np.zeros(n, np.uint8)
    if is_main():
        buf[:] = payload
    buf = np.asarray(multihost_utils.broadcast_one_to_all(buf))
    return pickle.loads(buf.tobytes())


def assert_same_on_all(obj: Any, what: str = "value") -> None:
    """Raise if ``obj`` (picklable) differs between processes — a cheap guard that every host is
    about to train on the same data."""
    if jax.process_count() == 1:
        return
    h = np.frombuffer(hashlib.sha256(pickle.dumps(obj)).digest(), np.uint8)
    allh = np.asarray(multihost_utils.process_allgather(h))  # [P, 32]
    if not (allh == allh[0]).all():
        bad = [i for i in range(allh.shape[0]) if not (allh[i] == allh[0]).all()]
        raise RuntimeError(f"{what} differs between processes (processes {bad} vs 0)")
