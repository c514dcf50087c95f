"""How many cores this process may really use: the CPU set, and the container's CPU quota.

A pod limited to 2 CPUs on a 64-core node sees 64 cores in `os.cpu_count()` and in its affinity mask;
only the cgroup's quota says 2. Sizing ONNX Runtime and decode threads by the node would run 64 threads
in a 2-CPU budget and get them throttled by the kernel.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def available_cores(cgroup_root: Path = CGROUP_ROOT) -> int:
    """Cores of the affinity mask (taskset, cpusets), capped by the cgroup CPU quota if one is set."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_limit(cgroup_root)
    return max(1, min(cores, quota)) if quota is not None else max(1, cores)


def cgroup_cpu_limit(cgroup_root: Path = CGROUP_ROOT) -> int | None:
    """The CPU quota in whole cores, rounded up (1.5 CPUs → 2), or None when there is no quota.

    cgroup v2: `cpu.max` holds "QUOTA PERIOD" or "max PERIOD". cgroup v1: `cpu/cpu.cfs_quota_us` (-1 for
    none) and `cpu/cpu.cfs_period_us`.
    """
    try:
        v2 = cgroup_root / "cpu.max"
        if v2.is_file():
            quota_text, period_text = v2.read_text().split()[:2]
            if quota_text == "max":
                return None
            return math.ceil(int(quota_text) / int(period_text))
        v1 = cgroup_root / "cpu"
        quota = int((v1 / "cpu.cfs_quota_us").read_text())
        period = int((v1 / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else math.ceil(quota / period)
    except (OSError, ValueError, ZeroDivisionError):  # no cgroup files, or unreadable: no quota known
        return None
