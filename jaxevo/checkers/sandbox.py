"""Run untrusted Python (a model's code and a data set's tests) in a separate interpreter process
that cannot harm the caller.

Layers, each enforced by the operating system except the last:
  - its own session and process group, killed as a whole afterwards (SIGKILL, before the leader
    is reaped, so the group id cannot have been reused);
  - wall time (`Limits.timeout_s`), CPU time, address space (RLIMIT_AS), file size
    (RLIMIT_FSIZE: also caps what it prints, which goes to size-limited files, not pipes), open
    files, no core dumps;
  - no new processes: RLIMIT_NPROC = 0. The kernel ignores that limit for root, so when the
    caller is root the child runs with real uid `NOBODY` and no capabilities but the two file
    ones (`setpriv`); its effective uid stays 0 so the interpreter's own files stay readable
    wherever they are installed;
  - no network: a fresh network namespace (`unshare --net`, only a downed loopback) where the
    kernel allows one (`network_isolation()` says which);
  - a temporary working directory, removed afterwards, and an audit hook (PEP 578) installed
    before the code runs that refuses: writes, deletions, renames and mode changes outside that
    directory; sockets; fork/exec/spawn/system; signals to other processes; importing ctypes.
    (For a root caller, the hook is what keeps file writes and signals off the caller's files and
    processes: its effective uid is 0.)

Reading files is not restricted (the code needs the interpreter's library, wherever it is);
with no network and output kept only in the result, what it reads goes nowhere else.

The audit hook stops accidents and the usual model-written hazards; it is not a boundary against
code written to escape an interpreter (the kernel limits above are). Run a hostile workload in a
container or VM as well.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

from jaxevo.errors import JaxevoError

__all__ = ["Limits", "RunResult", "run_python", "network_isolation", "MARKER_ENV"]

NOBODY = 65534
MARKER_ENV = "JAXEVO_SANDBOX"  # each child's environment names its run (tests find leftovers by it)
_OUTPUT_KEEP = 8192  # characters of stdout/stderr kept in the result


@dataclasses.dataclass(frozen=True)
class Limits:
    """Per-run limits. `timeout_s` is wall time; CPU time is capped at the same value."""

    timeout_s: float = 10.0
    memory_mb: int = 1024
    file_mb: int = 16
    open_files: int = 64


@dataclasses.dataclass(frozen=True)
class RunResult:
    """How a run ended. `ok`: exit status 0 within the time limit."""

    ok: bool
    returncode: int | None
    timed_out: bool
    stdout: str
    stderr: str
    seconds: float
    marker: str  # the value of MARKER_ENV in the child's environment


# Runs in the child before the user's code: limits, then the audit hook, then the code.
_BOOTSTRAP = r'''
import os, sys, json, resource
work, cfg = sys.argv[1], json.loads(sys.argv[2])
os.chdir(work)
for name, value in cfg["rlimits"].items():
    resource.setrlimit(getattr(resource, name), (value, value))
WORK = os.path.realpath(work)
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
DENY = {"os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
        "subprocess.Popen", "os.killpg", "socket.__new__", "socket.connect", "socket.bind",
        "socket.getaddrinfo", "socket.gethostbyname", "socket.sendto", "os.setuid", "os.chroot"}
PATHS = {"os.remove": 1, "os.rmdir": 1, "os.mkdir": 1, "os.rename": 2, "os.replace": 2,
         "os.link": 2, "os.symlink": 2, "os.truncate": 1, "os.chmod": 1, "os.chown": 1,
         "os.utime": 1, "shutil.rmtree": 1, "shutil.copyfile": 2, "shutil.move": 2}
def inside(path):
    if isinstance(path, int):
        return True  # an already-open descriptor
    p = os.path.realpath(os.path.join(os.getcwd(), os.fsdecode(path)))
    return p == WORK or p.startswith(WORK + os.sep)
def hook(event, args, _own=os.getpid()):
    if event in DENY:
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & WRITE)
        if writing and path is not None and not inside(path):
            raise PermissionError(f"sandbox: writing {path!r} outside the working directory")
    elif event in PATHS:
        for p in args[: PATHS[event]]:
            if p is not None and not inside(p):
                raise PermissionError(f"sandbox: {event} on {p!r} outside the working directory")
    elif event == "os.kill" and args[0] not in (0, _own):
        raise PermissionError("sandbox: signals to other processes are not allowed")
    elif event == "import" and args[0] in ("ctypes", "_ctypes"):
        raise ImportError("sandbox: ctypes is not allowed")
sys.addaudithook(hook)
del hook
sys.argv = ["solution.py"]
with open("solution.py", encoding="utf-8") as f:
    code = compile(f.read(), "solution.py", "exec")
exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
'''


def _works(cmd: list[str]) -> bool:
    try:
        return subprocess.run([*cmd, "true"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@functools.lru_cache(maxsize=1)
def _prefix() -> tuple[tuple[str, ...], str]:
    """(command prefix, network isolation in words), probed once per process."""
    root = os.geteuid() == 0
    net = ["unshare", "--net", "--"] if root else ["unshare", "--user", "--map-root-user", "--net", "--"]
    prefix: list[str] = []
    isolation = "audit hook only (no network namespace available)"
    if shutil.which("unshare") and _works(net):
        prefix, isolation = net, "network namespace (unshare --net) + audit hook"
    if root:
        # Every capability but reading and writing files goes: without CAP_SYS_RESOURCE and
        # CAP_SYS_ADMIN the kernel applies RLIMIT_NPROC; without CAP_SETUID it cannot undo this.
        drop = ["setpriv", "--ruid", str(NOBODY), "--bounding-set", "-all,+dac_override,+dac_read_search", "--"]
        if not (shutil.which("setpriv") and _works(prefix + drop)):
            raise JaxevoError("the code sandbox runs as root but cannot drop privileges with "
                               "setpriv (util-linux), so a fork bomb could not be stopped; run "
                               "jaxevo as an ordinary user or install util-linux")
        prefix += drop
    return tuple(prefix), isolation


def network_isolation() -> str:
    """How the sandbox keeps code off the network on this machine, in words."""
    return _prefix()[1]


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_exit(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait until `proc` exits without reaping it (the zombie keeps its group id ours until the
    group is killed). True if it exited in time."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # no pidfd: poll (reaps; a tiny pid-reuse window remains)
        try:
            proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


def _read(f) -> str:
    f.seek(0)
    return f.read(_OUTPUT_KEEP * 4).decode("utf-8", "replace")[-_OUTPUT_KEEP:]


def run_python(source: str, limits: Limits = Limits()) -> RunResult:
    """Run `source` as a script in the sandbox. Never raises for anything the code does."""
    prefix, _ = _prefix()
    marker = uuid.uuid4().hex
    work = tempfile.mkdtemp(prefix="jaxevo-sandbox-")
    outdir = tempfile.mkdtemp(prefix="jaxevo-sandbox-out-")  # outside `work`: the code cannot touch it
    start = time.monotonic()
    try:
        with open(os.path.join(work, "solution.py"), "w", encoding="utf-8") as f:
            f.write(source)
        cpu = max(1, int(limits.timeout_s + 1))
        cfg = {"rlimits": {"RLIMIT_AS": limits.memory_mb << 20, "RLIMIT_FSIZE": limits.file_mb << 20,
                           "RLIMIT_NOFILE": limits.open_files, "RLIMIT_CORE": 0, "RLIMIT_CPU": cpu,
                           "RLIMIT_NPROC": 0}}
        env = {"PATH": "/usr/bin:/bin", "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8",
               "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", MARKER_ENV: marker}
        cmd = [*prefix, sys.executable, "-I", "-c", _BOOTSTRAP, work, json.dumps(cfg)]
        with open(os.path.join(outdir, "out"), "w+b") as out, open(os.path.join(outdir, "err"), "w+b") as err:
            proc = subprocess.Popen(cmd, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=err, start_new_session=True, close_fds=True)
            exited = _wait_exit(proc, limits.timeout_s)
            _kill_group(proc.pid)  # stragglers, and the code itself when it ran out of time
            returncode = proc.wait()
            stdout, stderr = _read(out), _read(err)
        timed_out = not exited
        return RunResult(ok=exited and returncode == 0, returncode=None if timed_out else returncode,
                         timed_out=timed_out, stdout=stdout, stderr=stderr,
                         seconds=time.monotonic() - start, marker=marker)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(outdir, ignore_errors=True)
