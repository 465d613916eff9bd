"""glibc malloc settings for training processes on CPU.

XLA:CPU allocates its large per-step temporaries afresh every step; by default glibc serves them
with mmap and returns them on free, so every step page-faults the same memory again. Keeping freed
memory (one arena, no mmap, no trimming) took the HAN training step from ~150 to ~100 ms on a
2-core machine (tools/bench.py --malloc keep, applied to JAX and the torch reference alike).
The cost: a process keeps its peak heap until it exits, which a training process does anyway.
"""
from __future__ import annotations

import ctypes

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def keep_freed_memory() -> bool:
    """Applies the settings; False where the C library is not glibc (nothing changes there)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    libc.mallopt(_M_ARENA_MAX, 1)
    libc.mallopt(_M_MMAP_MAX, 0)
    libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    return True
