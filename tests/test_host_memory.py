"""The `jaxevo` command keeps a large block it freed mapped, so allocating it again on a worker
thread (as XLA:CPU does with a step's scratch buffer) faults in no pages; with
JAXEVO_MALLOC=default glibc maps and unmaps the block each time. Reference: the kernel's count of
minor page faults (getrusage)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from jaxevo import cli
from jaxevo.host_memory import keep_freed_memory

# In a fresh interpreter: the settings, then a thread that allocates, touches and frees 256 MiB
# three times; the faults of the last two rounds.
PROBE = """
import ctypes, json, resource, threading
from jaxevo.host_memory import keep_freed_memory
took = keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
libc.memset.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t)
SIZE = 256 << 20
faults = []
def work():
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        p = libc.malloc(SIZE)
        libc.memset(p, 1, SIZE)
        libc.free(p)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
t = threading.Thread(target=work)
t.start(); t.join()
print(json.dumps({"took": took, "faults": faults[1:]}))
"""

GLIBC = sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")


def _probe(malloc_setting: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.pop("JAXEVO_MALLOC", None)
    if malloc_setting is not None:
        env["JAXEVO_MALLOC"] = malloc_setting
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


def test_freed_block_stays_mapped():
    if not GLIBC:  # mallopt is glibc's: elsewhere the call must change nothing and say so
        assert keep_freed_memory() is False
        return
    pages = (256 << 20) // os.sysconf("SC_PAGE_SIZE")
    kept = _probe(None)
    assert kept["took"] is True
    # Reused: a few pages of bookkeeping at most, against 65,536 for the block.
    assert all(f < pages // 100 for f in kept["faults"]), kept
    default = _probe("default")
    assert default["took"] is False
    # glibc's own behaviour: the block is mapped afresh and every page faults in again.
    assert all(f >= pages for f in default["faults"]), default


def test_the_jaxevo_script_sets_malloc_before_main(monkeypatch):
    """The console script is `cli.entry`, which takes the settings before `main` imports JAX."""
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["jaxevo"] == "jaxevo.cli:entry"
    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append("malloc"))
    monkeypatch.setattr(cli, "main", lambda: calls.append("main") or 0)
    assert cli.entry() == 0 and calls == ["malloc", "main"]
