"""Decode lanes: on a CPU, the sampler's batches decoded two at a time by host threads of their own.

A decode step's weight products use both cores, but much of the rest runs on one (the attention's
p.v products, the key and value writes, the host's looks at the rows): with two batches of half
the rows in flight, one batch's serial ops overlap the other's products (docs/benchmarks.md,
"Two decode lanes"). The rows in flight stay `max_batch`: each lane decodes batches of half of it.
Which lane decodes a batch does not change its completions: a batch's programs see only its own
rows, its own cache buffer and its rows' own random streams.
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Callable, Iterable, Iterator

import jax

CPU_LANES = 2  # lanes on a CPU with at least this many cores; one lane elsewhere
_END = object()


def lane_count(platform: str, mesh, rows: int, max_batch: int, continuous: bool) -> int:
    """Lanes for `rows` rows of a sampler of `max_batch` rows: two on a single-process CPU without
    a mesh when the rows fill more than one batch (a run that fits one batch keeps it whole); else one."""
    if (platform != "cpu" or mesh is not None or continuous or jax.process_count() > 1
            or (os.cpu_count() or 1) < CPU_LANES or rows <= max_batch or max_batch < 2 * CPU_LANES):
        return 1
    return CPU_LANES


def shared(items: list) -> Callable[[], Iterator]:
    """A maker of iterators that take from one list, each item once: every lane makes one and takes
    the next batch when it is free (which lane gets which batch may vary; what it writes does not)."""
    lock, it = threading.Lock(), iter(items)

    def take():
        while True:
            with lock:
                item = next(it, _END)
            if item is _END:
                return
            yield item
    return take


def interleave(streams: list[Iterable]) -> Iterator[tuple[int, object]]:
    """(i, item) for the items of `streams`, each stream drained by a thread of its own, in the
    order they come. A stream's exception is raised here; closing this generator (or an exception
    in its consumer) stops the others at their next item and waits for the started ones."""
    q: queue.Queue = queue.Queue()
    stop = threading.Event()

    def drain(i: int, stream: Iterable) -> None:
        it = iter(stream)
        try:
            for item in it:
                q.put((i, item, None))
                if stop.is_set():
                    break
        except BaseException as e:  # noqa: BLE001 - handed to the consumer's thread
            q.put((i, _END, e))
            return
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()
        q.put((i, _END, None))

    threads = [threading.Thread(target=drain, args=(i, s), name=f"jaxevo-lane-{i}", daemon=True)
               for i, s in enumerate(streams)]
    # The others start when the first hands its first item (or ends): by then the programs a batch
    # starts with are compiled or loaded once, not by every lane at the same time.
    threads[0].start()
    left = len(threads)
    try:
        while left:
            i, item, err = q.get()
            if err is not None:
                raise err
            if threads[-1].ident is None:
                for t in threads[1:]:
                    t.start()
            if item is _END:
                left -= 1
                continue
            yield i, item
    finally:
        stop.set()
        for t in threads:
            if t.ident is not None:
                t.join()
