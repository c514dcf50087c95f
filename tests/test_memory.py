"""Memory: the container's limit the budgets are sized from, and the malloc settings that keep a
long-running server flat and give large peaks back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cats_dogs_other.memory import cgroup_memory_limit, configure_malloc

# Large blocks are freed twice over, as rasters of successive large images are. With glibc's dynamic
# mmap threshold the second round comes from the heap, and a small allocation made meanwhile (Python
# allocates all the time) pins the heap's top, so the freed 40 MB stay resident; with the fixed
# threshold every large block is unmapped when freed.
SCRIPT = """
import ctypes, ctypes.util
from cats_dogs_other.memory import configure_malloc
if {configure}:
    assert configure_malloc()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def rss():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:")) // 1024
pins = []
for _ in range(2):
    blocks = [libc.malloc(8 << 20) for _ in range(5)]
    for block in blocks:
        ctypes.memset(block, 1, 8 << 20)
    pins.append(libc.malloc(256 << 10))  # too big for any free hole: it comes from the top
    for block in blocks:
        libc.free(block)
print(rss())
"""


def rss_after_freeing(configure: bool) -> int:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(configure=configure)], capture_output=True, text=True, check=True
    )
    return int(done.stdout)


def test_malloc_can_be_configured() -> None:
    assert configure_malloc() is True  # glibc accepted both settings


def test_freed_large_blocks_leave_the_process() -> None:
    kept_by_default = rss_after_freeing(configure=False)
    kept_when_configured = rss_after_freeing(configure=True)
    assert kept_when_configured + 30 < kept_by_default, (kept_when_configured, kept_by_default)


@pytest.mark.parametrize(("text", "expected"), [("805306368", 768 << 20), ("max", None), ("garbage", None)])
def test_cgroup_v2_memory_limit(tmp_path: Path, text: str, expected: int | None) -> None:
    (tmp_path / "memory.max").write_text(text + "\n")
    assert cgroup_memory_limit(tmp_path) == expected


@pytest.mark.parametrize(("text", "expected"), [("805306368", 768 << 20), ("9223372036854771712", None)])
def test_cgroup_v1_memory_limit(tmp_path: Path, text: str, expected: int | None) -> None:
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text(text + "\n")
    assert cgroup_memory_limit(tmp_path) == expected  # v1 writes "no limit" as a huge number


def test_no_cgroup_files_means_no_memory_limit(tmp_path: Path) -> None:
    assert cgroup_memory_limit(tmp_path) is None
