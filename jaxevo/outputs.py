"""Outputs that cannot be written: found before the work starts, reported in one line.

    check_writable(path)          # every command, before sampling or training: fail in a second
    raise OutputError.from_exc(e, path)   # a disk-full / permission error during the work

`storage_cause` recognises the errors of a full disk, a quota, a read-only or forbidden path in
an exception or anything it wraps (Orbax and TensorStore re-raise them inside their own errors,
with the errno only in the text), so the run ends at once with the cause, not 400 lines later.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

from jaxevo.errors import JaxevoError

STORAGE_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                  errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                  errno.EPERM: "operation not permitted", errno.EFBIG: "file too large"}
_TEXT = re.compile("|".join(re.escape(os.strerror(n)) for n in STORAGE_ERRNOS), re.IGNORECASE)


class OutputError(JaxevoError):
    """An output cannot be written (disk full, quota, read-only, permission)."""

    @classmethod
    def from_exc(cls, e: BaseException, path: str | os.PathLike, what: str = "write",
                 advice: str = "") -> "OutputError":
        cause = storage_cause(e) or str(e).splitlines()[0][:200]
        return cls(f"cannot {what} {path}: {cause}{'; ' + advice if advice else ''}")


def storage_cause(e: BaseException) -> str | None:
    """'no space left on device' etc. when ``e`` or an exception it wraps is a storage error."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in STORAGE_ERRNOS:
            return STORAGE_ERRNOS[e.errno]
        m = _TEXT.search(str(e))
        if m:
            return m.group(0).lower()
        e = e.__cause__ or e.__context__
    return None


def check_writable(path: str | os.PathLike, *, is_dir: bool = False) -> Path:
    """Create ``path``'s folder (or ``path`` itself, ``is_dir``) and prove a file can be written
    there; an `OutputError` naming the path otherwise. Nothing of the user's is touched."""
    p = Path(path).absolute()
    folder = p if is_dir else p.parent
    try:
        if not is_dir and p.is_dir():
            raise OutputError(f"cannot write {p}: it is a directory; give a file name")
        blocker = next((a for a in (folder, *folder.parents) if a.exists() and not a.is_dir()), None)
        if blocker is not None:
            raise OutputError(f"cannot write {p}: {blocker} is a file, not a directory")
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".jaxevo-write-test-{os.getpid()}"
        with open(probe, "wb") as f:
            f.write(b"x" * 4096)  # a real block: a full disk refuses it
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
        if not is_dir and p.exists() and not os.access(p, os.W_OK):
            raise OutputError(f"cannot write {p}: the file is not writable")
    except OSError as e:
        advice = "free space there or choose another path" if storage_cause(e) else \
            "choose another path"
        raise OutputError.from_exc(e, p, advice=advice) from None
    return p
