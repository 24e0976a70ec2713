"""One writer per run directory: an exclusive lock file, ``DIR/.jaxevo.lock``.

    with DirLock(run_dir, "jaxevo evolve"):
        ...                                  # a second process gets `DirLockedError`

The lock is an `fcntl.flock` on the file, so the kernel releases it when its holder dies (SIGKILL,
OOM, a crash): a stale lock is taken over without anyone deleting anything. The file also holds
the holder's PID, host and command, which the refused process prints. Where the file system has
no flock (some network mounts answer ENOLCK/EOPNOTSUPP), the PID in the file decides: a live
process on this host keeps the lock, a dead one's is taken over (a holder on another host is
trusted to be alive: no host can check another's processes).

Re-entrant within a process for the same directory (a stage's trainer under `evolve` locks its
own folder; a test may nest), and a no-op on processes other than 0 of a multi-host run, which
write nothing.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from jaxevo.errors import JaxevoError

LOCK_NAME = ".jaxevo.lock"
_held: dict[Path, int] = {}  # directory -> depth (re-entrancy within this process)
_fds: dict[Path, int] = {}


class DirLockedError(JaxevoError):
    """Another live process writes into the directory."""


def _holder_text(info: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("since", 0)))
    return (f"PID {info.get('pid', '?')} on host {info.get('host', '?')} "
            f"({info.get('command', '?')}, since {since})")


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class DirLock:
    """Exclusive lock of ``directory`` (created if missing) for the life of a ``with`` block."""

    def __init__(self, directory: str | os.PathLike, command: str = "jaxevo", *, enabled: bool = True):
        self.dir = Path(directory).absolute()
        self.path = self.dir / LOCK_NAME
        self.command = command
        self.enabled = enabled

    def acquire(self) -> "DirLock":
        if not self.enabled:
            return self
        if self.dir in _held:
            _held[self.dir] += 1
            return self
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise DirLockedError(
                    f"{self.dir} is in use by {_holder_text(_read(self.path))}: two writers would "
                    f"corrupt it. Wait for that run to end (or stop it), or use another "
                    f"directory.") from None
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                os.close(fd)
                raise
            info = _read(self.path)  # no flock here: the PID in the file decides
            pid = info.get("pid")
            mine = info.get("host") == socket.gethostname()
            if pid and pid != os.getpid() and (not mine or _alive(int(pid))):
                os.close(fd)
                raise DirLockedError(f"{self.dir} is in use by {_holder_text(info)} (no flock on "
                                     f"this file system; delete {self.path} if that process is "
                                     f"gone)") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        _fds[self.dir], _held[self.dir] = fd, 1
        return self

    def release(self) -> None:
        if not self.enabled or self.dir not in _held:
            return
        _held[self.dir] -= 1
        if _held[self.dir]:
            return
        del _held[self.dir]
        fd = _fds.pop(self.dir)
        try:
            os.ftruncate(fd, 0)  # no holder named any more; the file stays (see module doc)
        except OSError:
            pass
        os.close(fd)  # releases the flock

    def __enter__(self) -> "DirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
