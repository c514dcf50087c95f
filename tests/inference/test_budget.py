"""The decode memory budget: bytes reserved by threads never exceed it; waiters go when others finish."""

from __future__ import annotations

import threading

import pytest

from cats_dogs_other.inference.budget import DecodeBudgetBusyError, MemoryBudget


def test_reservations_wait_until_the_bytes_are_given_back() -> None:
    budget = MemoryBudget(100)
    first_in = threading.Event()
    release_first = threading.Event()
    order: list[str] = []

    def first() -> None:
        with budget.reserve(70):
            order.append("first in")
            first_in.set()
            release_first.wait(5)
            order.append("first out")

    def second() -> None:
        first_in.wait(5)
        with budget.reserve(70):  # 140 > 100: must wait for the first to finish
            order.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    first_in.wait(5)
    assert budget.in_use == 70
    release_first.set()
    for thread in threads:
        thread.join(5)
    assert order == ["first in", "first out", "second in"]
    assert budget.peak == 70
    assert budget.in_use == 0


def test_small_reservations_share_the_budget() -> None:
    budget = MemoryBudget(100)
    with budget.reserve(40), budget.reserve(60):
        assert budget.in_use == 100
    assert budget.in_use == 0


def test_more_than_the_whole_budget_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="more than the whole budget"):
        MemoryBudget(100).reserve(101).__enter__()


def test_a_budget_full_for_too_long_says_busy() -> None:
    budget = MemoryBudget(100, wait_seconds=0.05)
    with budget.reserve(100), pytest.raises(DecodeBudgetBusyError):
        budget.reserve(1).__enter__()
    assert budget.in_use == 0
