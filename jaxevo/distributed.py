"""Multi-host (multi-controller) helpers on top of `jax.distributed` — no home-made cluster layer.

JAX runs one Python process per host; every process runs the same program, owns its local devices
and sees *global* arrays sharded over all devices. What a round needs from the host side:

    initialize(...)            start the runtime (TPU pod: no arguments; CPU tests: coordinator etc.)
    is_main() / main_only      process 0 writes JSONL, reports, manifests; everyone else skips
    local_slice(n)             this process's share of n global rows (for loading data)
    global_batch(local, mesh)  process-local rows [n/P, ...] -> one global array [n, ...]
    replicated_batch(x, mesh)  the same host array on every process -> a global batch-sharded array
    allgather(tree)            a (sharded) global tree -> the full numpy tree on every process
    broadcast(obj)             any picklable Python object from process 0 to all (e.g. samples)
    barrier(name)              wait for every process (e.g. after process 0 wrote a file)

Everything degrades to a no-op on a single process, so library code calls these unconditionally.
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
from typing import Any, Callable, Sequence, TypeVar

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxevo.errors import ConfigError

log = logging.getLogger(__name__)
T = TypeVar("T")
BATCH_AXES = ("data", "fsdp")

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
        from jax._src import distributed as _d

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
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


# ------------------------------------------------------------------------- data in
def local_slice(n: int) -> slice:
    """Rows [start, stop) of ``n`` global rows that this process loads: contiguous equal shares in
    process order, which matches how `global_batch` lays a batch-sharded array out when the mesh
    is built from ``jax.devices()`` (devices are ordered by process)."""
    p, i = jax.process_count(), jax.process_index()
    if n % p:
        raise ConfigError(f"{n} rows cannot be split evenly over {p} processes; pad or pick a "
                          f"batch size that is a multiple of {p}")
    k = n // p
    return slice(i * k, (i + 1) * k)


def global_batch(local: Any, mesh: Mesh, spec: P | None = None) -> Any:
    """Process-local rows -> global arrays: each leaf [n_local, ...] becomes [n_local * P, ...]
    sharded with ``spec`` (default: leading axis over data x fsdp). Each host only ever holds its
    own rows — the way to feed a pod without every host reading the whole data set."""
    spec = spec if spec is not None else P(BATCH_AXES)
    sh = NamedSharding(mesh, spec)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sh, np.asarray(x)), local)


def replicated_batch(host: Any, mesh: Mesh, spec: P | None = None) -> Any:
    """The same full host array on every process -> global arrays; each process places only its
    addressable shards (`jax.make_array_from_callback`). Simpler than `global_batch` when every
    host has the data anyway (small prompt sets, the trainer's in-memory views)."""
    spec = spec if spec is not None else P(BATCH_AXES)
    sh = NamedSharding(mesh, spec)

    def one(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sh, lambda idx: x[idx])
    return jax.tree.map(one, host)


# ------------------------------------------------------------------------- data out
def allgather(tree: Any) -> Any:
    """Global (possibly sharded, non-addressable) arrays -> full numpy arrays on every process."""
    if jax.process_count() == 1:
        return jax.tree.map(np.asarray, jax.device_get(tree))
    from jax.experimental import multihost_utils

    return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


def broadcast(obj: T) -> T:
    """Process 0's picklable ``obj`` on every process (e.g. generated samples, a scored data set),
    so all hosts continue from exactly the same data. Sent as a uint8 array through
    `multihost_utils.broadcast_one_to_all`: first its length, then the padded bytes."""
    if jax.process_count() == 1:
        return obj
    from jax.experimental import multihost_utils

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
    import hashlib

    from jax.experimental import multihost_utils

    h = np.frombuffer(hashlib.sha256(pickle.dumps(obj)).digest(), np.uint8)
    allh = np.asarray(multihost_utils.process_allgather(h))  # [P, 32]
    if not (allh == allh[0]).all():
        bad = [i for i in range(allh.shape[0]) if not (allh[i] == allh[0]).all()]
        raise RuntimeError(f"{what} differs between processes (processes {bad} vs 0)")
