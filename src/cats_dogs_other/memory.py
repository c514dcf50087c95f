"""The process's memory: how much its pod lets it use, and glibc settings that keep it flat.

The limit is the cgroup's (a pod's `resources.limits.memory`): the budgets one request may draw on
(`DECODE_MEMORY_BYTES`) are sized from it, as threads are sized from the CPU quota (cpu.py).

Kept flat and its peaks given back by two glibc malloc settings:

- Arenas capped at 2. glibc gives each thread that allocates its own arena (up to 8 per core); with
  decode threads, ONNX Runtime threads and the event loop all allocating, resident memory crept up
  over a ten-minute soak from fragmentation alone. Two arenas kept it flat at the same throughput
  (BENCHMARKS.md, *Soak*).
- A fixed mmap threshold of 4 MiB. By default glibc raises the threshold to the size of the last large
  block freed, so after one large image the next large rasters come from the heap and stay resident
  once freed. With a fixed threshold every
  allocation of 4 MiB or more (only large images' rasters; a 1-megapixel image needs less) is mapped
  and unmapped, and RSS returns to its baseline after each one (BENCHMARKS.md, *glibc and large
  rasters*). Fixing it also freezes the heap-trim threshold at 128 KiB, which returned and re-faulted
  the heap's top on every request (fewer requests/s under overload); it is set to twice the mmap
  threshold, as glibc itself would.
This is what MALLOC_ARENA_MAX=2, MALLOC_MMAP_THRESHOLD_=4194304 and MALLOC_TRIM_THRESHOLD_=8388608 do,
applied from inside so that `serve` needs no wrapper script.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from pathlib import Path

M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 4 << 20
log = logging.getLogger(__name__)
CGROUP_ROOT = Path("/sys/fs/cgroup")
# cgroup v1 writes "no limit" as the largest page-aligned 64-bit value; anything this large is none.
NO_LIMIT_FROM = 1 << 60


def cgroup_memory_limit(cgroup_root: Path = CGROUP_ROOT) -> int | None:
    """The memory limit of this process's cgroup in bytes, or None when there is none (or no cgroup).

    cgroup v2: `memory.max` holds bytes or "max". cgroup v1: `memory/memory.limit_in_bytes`.
    """
    try:
        v2 = cgroup_root / "memory.max"
        text = (
            v2.read_text().strip()
            if v2.is_file()
            else (cgroup_root / "memory" / "memory.limit_in_bytes").read_text().strip()
        )
        if text == "max":
            return None
        limit = int(text)
    except (OSError, ValueError):  # no cgroup files, or unreadable: no limit known
        return None
    return limit if 0 < limit < NO_LIMIT_FROM else None


def configure_malloc(arenas: int = 2, mmap_threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Cap malloc arenas and fix the mmap and trim thresholds (glibc only; elsewhere a no-op, False).

    Call before threads start allocating."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        settings = (
            (M_ARENA_MAX, arenas),
            (M_MMAP_THRESHOLD, mmap_threshold),
            (M_TRIM_THRESHOLD, 2 * mmap_threshold),
        )
        return all([bool(libc.mallopt(option, value)) for option, value in settings])
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        return False
