"""Keep a long-running server's memory flat: cap glibc's malloc arenas.

glibc gives each thread that allocates its own arena (up to 8 per core); with decode threads, ONNX Runtime
threads and the event loop all allocating, resident memory crept up 15% over a ten-minute soak from
fragmentation alone. Two arenas kept it flat (+2%) at the same throughput (BENCHMARKS.md). This is what
MALLOC_ARENA_MAX=2 does, applied from inside so that `serve` needs no wrapper script.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

M_ARENA_MAX = -8  # from glibc's malloc.h
log = logging.getLogger(__name__)


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap malloc arenas (glibc only; elsewhere a no-op). Call before threads start allocating."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        return False
