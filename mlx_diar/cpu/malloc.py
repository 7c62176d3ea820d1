"""Keep large freed blocks in the process heap on Linux (glibc), so MLX's CPU backend reuses them.

MLX's CPU allocator calls malloc/free for every array. glibc serves blocks above its mmap
threshold (dynamic, at most 32 MiB) with fresh mmap()s and unmaps them on free, so every
activation of the embedding trunk (10-40 MB per 10 s chunk) was page-faulted and zeroed by the
kernel anew: on a 2-core x86 CPU ~1 million minor faults and ~40 % of the trunk's time in the
kernel. A fixed 32 MiB threshold and a 512 MiB trim threshold make those blocks come from the
heap and stay there for the next chunk (0 minor faults in steady state; peak memory unchanged,
up to 512 MiB of freed heap kept for reuse). Between stages, `release_free_heap` hands that
kept heap back, so the next stage's own arrays (the clustering's distance matrix on a long
file) do not add to it.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest allowed value on 64-bit
TRIM_THRESHOLD = 512 * 2**20
_TUNED = False


def tune_malloc() -> bool:
    """Apply the thresholds above (glibc on Linux only); returns whether they are in effect.

    Set ``MLX_DIAR_NO_MALLOC_TUNING=1`` to keep glibc's defaults (for comparisons).
    """
    global _TUNED
    if _TUNED or not sys.platform.startswith("linux") or os.environ.get("MLX_DIAR_NO_MALLOC_TUNING"):
        return _TUNED
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except AttributeError:  # not glibc (e.g. musl)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    _TUNED = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _TUNED


def release_free_heap() -> None:
    """Return the freed heap kept by `tune_malloc` to the system (glibc `malloc_trim(0)`); no-op
    when the tuning is not in effect. Called between pipeline stages, whose working sets differ."""
    if _TUNED:
        ctypes.CDLL(None).malloc_trim(0)
