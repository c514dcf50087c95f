"""Threads by the CPU quota: a pod limited to 2 CPUs on a big node must size its threads for 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from cats_dogs_other import cpu


def cgroup_v2(root: Path, cpu_max: str) -> Path:
    (root / "cpu.max").write_text(cpu_max + "\n")
    return root


def cgroup_v1(root: Path, quota: int, period: int) -> Path:
    (root / "cpu").mkdir()
    (root / "cpu" / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (root / "cpu" / "cpu.cfs_period_us").write_text(f"{period}\n")
    return root


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("200000 100000", 2), ("150000 100000", 2), ("50000 100000", 1), ("max 100000", None)],
)
def test_cgroup_v2_quota_in_whole_cores(tmp_path: Path, cpu_max: str, expected: int | None) -> None:
    assert cpu.cgroup_cpu_limit(cgroup_v2(tmp_path, cpu_max)) == expected


@pytest.mark.parametrize(("quota", "expected"), [(400000, 4), (-1, None)])
def test_cgroup_v1_quota_in_whole_cores(tmp_path: Path, quota: int, expected: int | None) -> None:
    assert cpu.cgroup_cpu_limit(cgroup_v1(tmp_path, quota, 100000)) == expected


def test_no_cgroup_files_means_no_quota(tmp_path: Path) -> None:
    assert cpu.cgroup_cpu_limit(tmp_path) is None


def test_a_two_cpu_pod_on_a_64_core_node_uses_two(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu.os, "sched_getaffinity", lambda _: set(range(64)))
    assert cpu.available_cores(cgroup_v2(tmp_path, "200000 100000")) == 2
    assert cpu.available_cores(tmp_path / "absent") == 64


def test_a_cpu_set_smaller_than_the_quota_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu.os, "sched_getaffinity", lambda _: {0})
    assert cpu.available_cores(cgroup_v2(tmp_path, "800000 100000")) == 1
