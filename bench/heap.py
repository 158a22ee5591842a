"""Keep freed tensor memory in the process instead of handing it back to the OS after every frame.

A simulation frees and re-allocates the same activation-sized buffers every frame (spikes,
conv outputs, graded units' outputs). glibc's malloc serves such buffers from ``mmap`` above
its mmap threshold and trims the top of its heap above its trim threshold, so each frame
unmaps them and the next faults every page in again: ~43 000 minor page faults per T = 8
run of vgg_small at batch 64 (~170 MB), up to a third of its wall time and most of its run-to-run
spread (BENCHMARKS.md §1). Raising both thresholds keeps the freed blocks in the heap for
reuse; the process's peak memory is unchanged, it just stays resident at that peak.

:func:`retain_freed_memory` applies it to this process (``mallopt``) and, through glibc's
environment tunables, to the processes it starts (pool and cell workers, Ray workers started
here). Off with ``SNNBENCH_MALLOC_RETAIN=0``; a no-op where the C library has no ``mallopt``
(musl, macOS, Windows).
"""

from __future__ import annotations

import ctypes
import os

#: glibc mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: the largest mmap threshold glibc accepts on 64-bit (allocations above it are still mmapped)
MMAP_THRESHOLD = 32 << 20
#: free memory kept at the top of the heap before it is trimmed (int max: never, in practice)
TRIM_THRESHOLD = 2**31 - 1
ENV = "SNNBENCH_MALLOC_RETAIN"
_FALSE_WORDS = {"0", "false", "off", "no"}


def retain_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process and its children; returns whether
    this process's allocator was changed."""
    if os.environ.get(ENV, "1").strip().lower() in _FALSE_WORDS:
        return False
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(MMAP_THRESHOLD))
    os.environ.setdefault("MALLOC_TRIM_THRESHOLD_", str(TRIM_THRESHOLD))
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
