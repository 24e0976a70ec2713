"""The persistent compilation cache jaxevo turns on: bounded, and locked around reads and writes
(two processes compiling one program must never read a half-written entry)."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import sys
import jax, jax.numpy as jnp
from jaxevo.runtime import enable_compilation_cache
enable_compilation_cache(sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
f = jax.jit(lambda x: jnp.sin(x) @ x.T + {k})
print(float(f(jnp.ones((64, 64))).sum()))
"""


def test_cache_is_bounded_locked_and_shared_by_concurrent_processes(tmp_path):
    """Four processes compile the same two programs at once into one cache folder: all finish with
    the same result, the entries are written once, and JAX's lock file shows reads and writes were
    locked (it exists only when the cache has a size bound)."""
    procs = [subprocess.Popen([sys.executable, "-c", CHILD.format(k=k % 2), str(tmp_path)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={"PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})
             for k in range(4)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-2000:] for _, e in outs]
    assert len({o for o, _ in outs}) == 2
    assert (tmp_path / ".lockfile").exists()
    assert len(list(tmp_path.glob("*-cache"))) >= 2


def test_a_cache_written_without_a_bound_keeps_caching(tmp_path):
    """Entries an older jaxevo wrote (no access-time file) get one, so the bounded cache can size
    itself and write new entries (it failed with FileNotFoundError on every write before)."""
    (tmp_path / "jit_old-abc-cache").write_bytes(b"x" * 10)
    r = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", CHILD.format(k=3), str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600,
                       env={"PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "jit_old-abc-atime").exists()
    assert len(list(tmp_path.glob("jit__lambda-*-cache"))) == 1


def test_clearing_caches_unmaps_compiled_programs():
    """What tests/conftest.py and each evolve round rely on: compiled programs keep memory maps
    until `jax.clear_caches()` drops them (a whole-suite process reached vm.max_map_count)."""
    import jax
    import jax.numpy as jnp

    def maps():
        with open("/proc/self/maps") as f:
            return sum(1 for _ in f)

    jax.clear_caches()
    before = maps()
    for i in range(40):
        f = jax.jit(lambda x, i=i: (jnp.sin(x) * i + jnp.cos(x @ x.T).sum()) @ jnp.tanh(x.T @ x))
        f(jnp.ones((64 + i, 64))).block_until_ready()
    grown = maps()
    jax.clear_caches()
    assert grown - before >= 40, (before, grown)  # at least one map per program
    assert maps() - before < (grown - before) / 2, (before, grown, maps())


def test_a_rerun_says_it_loaded_its_programs_from_the_cache(tmp_path):
    """What each command prints at its end: a first run compiles its programs (the jitted function
    and the eager ops around it), a second process with the same cache loads every one of them."""
    child = CHILD.format(k=5) + "from jaxevo.runtime import compile_summary\nprint(compile_summary())\n"
    counts = []
    for _ in range(2):
        r = subprocess.run([sys.executable, "-c", child, str(tmp_path)], cwd=ROOT, capture_output=True,
                           text=True, timeout=600,
                           env={"PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})
        assert r.returncode == 0, r.stderr[-2000:]
        line = r.stdout.splitlines()[-1]
        m = re.fullmatch(r"XLA programs: (\d+) of (\d+) loaded from the compilation cache, (\d+) compiled; "
                         r"\d+ s compiling or loading \((.+)\)", line)
        assert m is not None and m[4] == str(tmp_path), line
        counts.append(tuple(int(x) for x in m.groups()[:3]))
    n = counts[0][1]
    assert n >= 1 and counts == [(0, n, n), (n, n, 0)]
