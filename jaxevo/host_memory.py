"""Keep the memory a step frees inside the process instead of handing it back to the system.

XLA:CPU allocates an executable's scratch buffer (gigabytes for a train step) with malloc on its
worker threads, and glibc serves a block that large from a fresh `mmap` and `munmap`s it when the
step ends: every step then faults in and zeroes the same gigabytes again (docs/benchmarks.md,
"A step's scratch kept mapped"). In a virtual machine that reports free pages to its host (a
balloon with free page reporting, as on the Firecracker machines this project runs on) each of
those pages must also be found again by the host, and how long that takes depends on the host's
load. One malloc arena that neither maps large blocks separately nor trims its top keeps the block
mapped between steps.
"""

from __future__ import annotations

import ctypes
import os
import sys

# mallopt parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8

# mallopt(3): "Setting M_TRIM_THRESHOLD to -1 disables trimming completely".
NO_TRIM = -1

OFF = ("default", "off", "0", "false")


def keep_freed_memory() -> bool:
    """Set glibc's malloc to one arena with no separately mapped blocks and no trimming, so freed
    memory is reused rather than returned. Call before JAX starts its threads (an arena is picked
    per thread when it first allocates). A no-op (returns False) off Linux/glibc or when
    ``JAXEVO_MALLOC=default``; True when the settings took."""
    if os.environ.get("JAXEVO_MALLOC", "").lower() in OFF or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library Python itself runs on
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return all(mallopt(param, value) == 1 for param, value in
               ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, NO_TRIM)))
