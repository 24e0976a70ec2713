"""The `code` checker and its sandbox: correct code passes; a timeout, an infinite loop, a memory
bomb, a fork bomb, a write outside its directory, a socket all score 0, leave the test process as
it was, and leave no process behind (found by the marker in each child's environment)."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from jaxevo.checkers import get_checker
from jaxevo.checkers.code import extract_code, make_code_checker, program
from jaxevo.checkers.sandbox import MARKER_ENV, Limits, network_isolation, run_python

FAST = Limits(timeout_s=10.0, memory_mb=256)  # roomy: good code ends long before, even on a loaded machine
CODE = make_code_checker("code_test", FAST)  # not registered: the same checker with short limits
HAZARD = Limits(timeout_s=1.0, memory_mb=256)  # what must fail may fail fast
CODE_HAZARD = make_code_checker("code_hazard", HAZARD)

ADD = {"id": "add", "prompt": "def add(a, b):\n    \"\"\"Return a + b.\"\"\"\n",
       "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n",
       "entry_point": "add"}


def _processes_with(marker: str) -> list[int]:
    """Pids whose environment carries MARKER_ENV=marker (the sandbox's children)."""
    needle = f"{MARKER_ENV}={marker}".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if needle in env.split(b"\0"):
            found.append(int(pid))
    return found


@pytest.fixture
def unharmed(tmp_path):
    """The test process before and after: cwd, open descriptors, a file outside the sandbox."""
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("keep")
    before = (os.getcwd(), len(os.listdir("/proc/self/fd")), threading.active_count())
    yield sentinel
    assert sentinel.read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sentinel.txt"]
    assert (os.getcwd(), len(os.listdir("/proc/self/fd")), threading.active_count()) == before


def test_correct_code_passes_and_wrong_code_fails():
    good = "```python\ndef add(a, b):\n    return a + b\n```"
    assert CODE.check(good, ADD) == 1.0
    assert CODE.check("```python\ndef add(a, b):\n    return a - b\n```", ADD) == 0.0
    # HumanEval habit: only the body; the prompt's signature goes first.
    assert CODE.check("    return a + b\n", ADD) == 1.0
    # Plain asserts instead of check(candidate).
    assert CODE.check(good, {"test": "assert add(1, 1) == 2"}) == 1.0
    assert CODE.check(good, {"test": "assert add(1, 1) == 3"}) == 0.0
    assert get_checker("code").check(good, ADD) == 1.0  # the registered one, default limits


def test_extract_code():
    assert extract_code("Here:\n```py\nx = 1\n```\nand\n```python\ny = 2\n```") == "x = 1\n"
    assert extract_code("```\nx = 1\n```") == "x = 1\n"
    assert extract_code("```js\nlet x = 1;\n```") is None
    assert extract_code("x = (1 +") is None  # no fence and not Python
    assert extract_code("I would write a loop.") is None
    assert extract_code("def f():\n    return 1\n").startswith("def f")
    assert not CODE.well_formatted("no code here", ADD) and CODE.well_formatted("```python\nx=1\n```", ADD)
    assert "check(add)" in program("def add(a, b):\n    return a + b", ADD)


HAZARDS = {
    "timeout": "import time\ntime.sleep(60)\n",
    "infinite loop": "while True:\n    pass\n",
    "memory bomb": "blocks = []\nwhile True:\n    blocks.append(bytearray(50 << 20))\n",
    "fork bomb": "import os\nwhile True:\n    os.fork()\n",
    "subprocess": "import subprocess\nsubprocess.run(['sleep', '30'])\n",
    "thread bomb": "import threading, time\nwhile True:\n    threading.Thread(target=time.sleep, args=(30,)).start()\n",
    "huge output": "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n",
    "kill the parent": "import os\nos.kill(os.getppid(), 9)\n",
}


@pytest.mark.parametrize("name", sorted(HAZARDS))
def test_hazards_score_zero_and_leave_nothing(name, unharmed):
    code = f"```python\n{HAZARDS[name]}```"
    start = time.monotonic()
    result = run_python(HAZARDS[name], HAZARD)
    assert not result.ok
    assert time.monotonic() - start < HAZARD.timeout_s + 10  # stopped, not left to run
    assert _processes_with(result.marker) == []
    assert CODE_HAZARD.check(code, {"test": "pass"}) == 0.0  # pass: only the hazard can fail the program


def test_writing_outside_the_working_directory_fails(unharmed):
    target = unharmed.parent / "escaped.txt"
    for how in (f"open({str(target)!r}, 'w').write('x')",
                f"import os\nos.chdir({str(target.parent)!r})\nopen('escaped.txt', 'w').write('x')",
                f"import os\nfd = os.open({str(target)!r}, os.O_WRONLY | os.O_CREAT)\nos.write(fd, b'x')",
                f"import os\nos.remove({str(unharmed)!r})",
                f"import shutil\nshutil.rmtree({str(unharmed.parent)!r})",
                f"import os\nos.rename({str(unharmed)!r}, 'mine.txt')"):
        result = run_python(how, FAST)
        assert not result.ok and "sandbox:" in result.stderr, how
        assert CODE.check(f"```python\n{how}\n```", {"test": "pass"}) == 0.0
    assert not target.exists()
    # Its own directory is writable: a program may use scratch files.
    assert run_python("open('scratch.txt', 'w').write('x')\nassert open('scratch.txt').read() == 'x'", FAST).ok


def test_a_socket_cannot_be_opened(unharmed):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    try:
        for how in (f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)",
                    f"import socket\ns = socket.socket()\ns.connect(('127.0.0.1', {port}))",
                    "import urllib.request\nurllib.request.urlopen('http://example.com', timeout=1)"):
            result = run_python(how, FAST)
            assert not result.ok, how
            assert CODE.check(f"```python\n{how}\n```", {"test": "pass"}) == 0.0
        with pytest.raises(socket.timeout):
            server.accept()  # nothing ever reached the test's listener
    finally:
        server.close()
    assert network_isolation()  # says which isolation this machine gives (reported, not asserted)


def test_kernel_limits_hold_without_the_audit_hook():
    """What the kernel enforces, checked from inside: no new process or thread (RLIMIT_NPROC, which
    the kernel applies because the child's real uid is not root and it lacks CAP_SYS_RESOURCE and
    CAP_SYS_ADMIN: a thread that fails to start proves it), and the address-space cap."""
    probe = ("import os, resource, threading\n"
             "assert resource.getrlimit(resource.RLIMIT_NPROC) == (0, 0)\n"
             "assert resource.getrlimit(resource.RLIMIT_AS)[0] == 256 << 20\n"
             "try:\n    threading.Thread(target=print).start()\nexcept RuntimeError:\n    pass\n"
             "else:\n    raise SystemExit('a thread started')\n")
    result = run_python(probe, FAST)
    assert result.ok, result.stderr


def test_the_sandbox_is_safe_from_threads():
    """Scoring in worker threads (as a pool would): several runs at once, each isolated."""
    results = []
    threads = [threading.Thread(target=lambda i=i: results.append(run_python(f"print({i})", FAST).stdout))
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(int(r) for r in results) == [0, 1, 2, 3]
