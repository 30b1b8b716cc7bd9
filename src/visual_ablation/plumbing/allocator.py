"""Freed memory kept in the job's process.

glibc's malloc serves a block of 128 KiB or more (the threshold grows up to 32 MiB with
what was freed) with its own mmap, and gives it back to the kernel when it is freed; the
next such block is faulted in again, page by page, zeroed by the kernel. A train step
allocates and frees its tensors' temporaries (tens of MB) hundreds of times a job, each a
fresh mapping and its page faults (benchmarks/README.md, `default_run.py`, "The
allocator"). Every job therefore asks malloc to
keep what it frees (mallopt: mmap only for blocks over 1 GiB, no trimming of the heap's
top): the same numbers, a peak resident size no larger than the job's peak use.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_ABOVE = 2**30


def keep_freed_memory() -> bool:
    """Set glibc's malloc to keep freed memory for reuse; False where the C library is
    not glibc (nothing changed)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_ABOVE)) and bool(
        mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
    )
