"""Preemption: turn SIGTERM (how Cloud TPU VMs, spot VMs and most schedulers announce the end) and
Ctrl-C (SIGINT; a second Ctrl-C interrupts at once) into a flag the train loop polls between
steps, so it can save a checkpoint and exit cleanly.

    from jaxevo import preemption
    preemption.install()                  # once, at start-up (idempotent)
    for s in range(start, end):
        state = step(state, batch)
        if preemption.should_stop(s + 1):  # same answer on every process
            ckpt.save(s + 1, state, meta); break

Multi-host: the signal can reach the hosts at different moments. Every process must take the
same branch (an Orbax save is a collective), so `should_stop` combines the local flags of all
processes with a max-allreduce (`multihost_utils.process_allgather`) — one tiny collective per
step; pass ``check_every`` to do it every k steps only. JAX's own preemption service
(`multihost_utils.reached_preemption_sync_point`) is used instead when the distributed runtime
has it enabled (TPU pods with ``jax_enable_preemption_service``), since it also catches
maintenance events that do not signal the process.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Iterable

import jax
import numpy as np
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)

_flag = threading.Event()
_installed: dict[int, object] = {}  # signum -> previous handler
_received: list[int] = []  # the signals that set the flag (the first names the exit code)
EXIT_CODE = 143  # 128 + SIGTERM: what a launcher sees from a cleanly preempted run


def _handler(signum, frame):  # noqa: ARG001 - signal API
    if signum == signal.SIGINT and _flag.is_set():
        raise KeyboardInterrupt  # a second Ctrl-C: the user will not wait for the checkpoint
    if not _flag.is_set():
        what = "Ctrl-C" if signum == signal.SIGINT else f"signal {signum}"
        extra = " (Ctrl-C again to stop without it)" if signum == signal.SIGINT else ""
        log.warning("received %s: will checkpoint after the current step and stop%s", what, extra)
        _received.append(signum)
    _flag.set()


def exit_code() -> int:
    """128 + the signal that asked to stop (143 for SIGTERM, 130 for Ctrl-C)."""
    return 128 + _received[0] if _received else EXIT_CODE


def install(signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT)) -> None:
    """Install the flag-setting handler. Idempotent; a no-op outside the main thread (Python only
    lets the main thread set handlers; a trainer run from a worker thread keeps the default)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for s in signals:
        if s not in _installed:
            _installed[s] = signal.signal(s, _handler)


def uninstall() -> None:
    """Restore the previous handlers (the loop does this when training ends)."""
    for s, prev in list(_installed.items()):
        signal.signal(s, prev)  # type: ignore[arg-type]
        del _installed[s]


def request_stop() -> None:
    """Set the flag by hand (tests, or a caller with its own reason to stop)."""
    _flag.set()


def reset() -> None:
    _flag.clear()
    _received.clear()


def requested() -> bool:
    """This process's local flag (no collective): for logging, not for control flow on pods."""
    return _flag.is_set()


def should_stop(step: int | None = None, *, check_every: int = 1) -> bool:
    """True when any process was asked to stop; identical on every process.

    ``step``: the optimizer step just finished; with ``check_every > 1`` the multi-process check
    runs only when ``step % check_every == 0`` (all processes agree on step, so on the answer).
    """
    if jax.process_count() == 1:
        return _flag.is_set()
    if step is not None and check_every > 1 and step % check_every:
        return False
    if step is not None and _preemption_service_reached(step):
        return True
    local = np.asarray([1 if _flag.is_set() else 0], np.int32)
    return bool(np.asarray(multihost_utils.process_allgather(local)).max() > 0)


def _preemption_service_reached(step: int) -> bool:
    """JAX's preemption sync point when the distributed runtime runs that service, else False."""
    try:
        return bool(multihost_utils.reached_preemption_sync_point(step))
    except Exception:  # service not enabled / not a distributed run
        return False


class Preempted(SystemExit):
    """Raised after the checkpoint of ``step`` was written; exits with 128 + the signal (143 for
    SIGTERM, 130 for Ctrl-C) if uncaught."""

    def __init__(self, step: int, out_dir: str, code: int = EXIT_CODE):
        super().__init__(code)
        self.step, self.out_dir = step, out_dir

    def __str__(self) -> str:
        return (f"stopped by a signal: checkpoint of step {self.step} saved in {self.out_dir}; "
                f"rerun the same command to resume")
