"""Let glibc keep freed host memory for reuse, so a CPU training step stops paying page faults.

XLA's CPU runtime allocates each execution's temporary buffer with malloc and frees it when the
step ends: 843 MiB for BERT-mini's pre-training step at batch 32. glibc serves a block that large
with a fresh mmap and gives it back with munmap, so every step faults in ~216,000 new pages: on the
2-core development VM 0.47 s of kernel time per 0.83 s step (docs/benchmarks.md). Three mallopt
settings make the freed block stay in the heap and serve the next step:

- no mmap for malloc (M_MMAP_MAX = 0): large blocks come from the heap;
- one arena (M_ARENA_MAX = 1): XLA's worker threads would otherwise allocate from their own
  arenas, whose heaps are at most 64 MiB and which fall back to mmap for anything larger;
- no trimming (M_TRIM_THRESHOLD = -1): free() never hands the top of the heap back.

The cost is that the process keeps its peak heap instead of returning it to the system, which a
training process would reach again at its next step anyway.
"""

from __future__ import annotations

import ctypes
import platform

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # glibc's malloc.h
_SETTINGS = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1))  # -1: never trim


def keep_freed_memory() -> bool:
    """Apply the settings above; True if they took effect (glibc on Linux), False elsewhere.

    Call it before JAX starts its backend (before the first computation): threads that already
    have an arena of their own keep it."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt  # the process's own libc
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all([mallopt(option, value) == 1 for option, value in _SETTINGS])
