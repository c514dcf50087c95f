"""A memory budget for decoding, shared by every decode thread of a process.

Decoding is where a small request becomes big: a 150 KB PNG can hold 40 million pixels. Counting decode
threads bounds how many images are decoded at once but not how much memory they take, so each decode
first reserves the bytes its pixels will need (`decode.decode_cost`); past the budget it waits for
others to finish, and an image that alone needs more than the whole budget is refused.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from cats_dogs_other.inference.batching import QueueFullError


class DecodeBudgetBusyError(QueueFullError):
    """The budget stayed full for longer than a decode may wait; the API answers 503."""


class MemoryBudget:
    """Bytes reserved by threads, never more than `capacity` at once. Thread-safe; blocks the caller."""

    def __init__(self, capacity: int, wait_seconds: float = 30.0) -> None:
        self.capacity = capacity
        self.wait_seconds = wait_seconds
        self.in_use = 0
        self.peak = 0
        self._changed = threading.Condition()

    @contextmanager
    def reserve(self, nbytes: int) -> Iterator[None]:
        """Hold `nbytes` (at most `capacity`) for the duration of the block."""
        if nbytes > self.capacity:
            raise ValueError(f"{nbytes} bytes is more than the whole budget of {self.capacity}")
        with self._changed:
            if not self._changed.wait_for(lambda: self.in_use + nbytes <= self.capacity, self.wait_seconds):
                raise DecodeBudgetBusyError(
                    f"decoding has used its whole memory budget for over {self.wait_seconds:g} s"
                )
            self.in_use += nbytes
            self.peak = max(self.peak, self.in_use)
        try:
            yield
        finally:
            with self._changed:
                self.in_use -= nbytes
                self._changed.notify_all()
