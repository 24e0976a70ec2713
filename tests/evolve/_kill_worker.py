"""Subprocess side of the kill tests: the real `jaxevo evolve` command, paused at one point so the
test can kill it there.

    python -m tests.evolve._kill_worker MARK POINT -- evolve --config ... key=value ...

POINT: ``none`` (just run), ``sampling`` (inside the second sampling call of the run: a journal
chunk is on disk, the next one not), ``sft`` (after SFT step 1), ``rename`` (a stage folder renamed
to its final name, the manifest not yet written). At the point the worker creates the file MARK
and waits until a signal asks it to stop (SIGTERM under training) or kills it (SIGKILL).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def pause(mark: Path) -> None:
    from jaxevo import preemption

    mark.write_text("paused")
    while not preemption.requested():
        time.sleep(0.05)


def arm(point: str, mark: Path) -> None:
    if point == "sampling":
        from jaxevo.sampling.api import Sampler

        real, calls = Sampler.generate, []

        def generate(self, *a, **kw):
            calls.append(1)
            if len(calls) == 2:
                pause(mark)
            return real(self, *a, **kw)
        Sampler.generate = generate
    elif point == "sft":
        from jaxevo.train import loop

        finalize = loop.finalize_metrics

        def finalize_then_pause(raw):
            m = finalize(raw)
            if not mark.exists():
                pause(mark)
            return m
        loop.finalize_metrics = finalize_then_pause
    elif point == "rename":
        from jaxevo.evolve.rundir import RunDir

        write = RunDir._write

        def write_after_rename(self, m):
            st = m["rounds"].get("1", {}).get("stages", {}).get("sft", {})
            if st.get("done") and (self.root / "round_001" / "sft").is_dir() and not mark.exists():
                pause(mark)  # the folder has its final name; the manifest does not say so yet
            return write(self, m)
        RunDir._write = write_after_rename
    elif point != "none":
        raise SystemExit(f"unknown point {point}")


if __name__ == "__main__":
    mark, point, sep, *args = sys.argv[1:]
    assert sep == "--"
    arm(point, Path(mark))
    from jaxevo.cli import main

    sys.exit(main(args))
