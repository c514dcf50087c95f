"""A memory budget for decoding, shared by every decode thread of a process.

Decoding is where a small request becomes big: a 150 KB PNG can hold 40 million pixels. Counting decode
threads bounds how many images are decoded at once but not how much memory they take, so each decode
first reserves the bytes its pixels will need (`decode.decode_cost`); past the budget it waits for
others to finish, and an image that alone needs more than the whole budget is refused.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
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


class RequestBudget:
    """What one request may spend, whatever way it came in and however many files it carries.

    - Memory: every decode and every document read reserves its bytes from the process's shared
      `MemoryBudget` (through `reserve`) before allocating them.
    - Work: seconds of CPU its reading and decoding take (each step's thread CPU time, `timed`) and its
      share of the model calls its images were in (`charge`). Past `seconds`, what is left of the
      request's documents is answered at once with 422 instead of being worked on.
    - Inflation: bytes its documents' compressed streams may expand to, all documents together.

    The engine takes one in every call that decodes or reads, so a way in cannot skip it, and one
    request cannot buy a budget per file.
    """

    def __init__(self, memory: MemoryBudget, seconds: float, inflation_bytes: int) -> None:
        self.memory = memory
        self.seconds = seconds
        self.inflation_bytes = inflation_bytes
        self.spent_seconds = 0.0
        self.inflated_bytes = 0
        self._lock = threading.Lock()

    @property
    def capacity(self) -> int:
        return self.memory.capacity

    def reserve(self, nbytes: int) -> contextlib.AbstractContextManager[None]:
        return self.memory.reserve(nbytes)

    def charge(self, seconds: float) -> None:
        with self._lock:
            self.spent_seconds += seconds

    def over_time(self, running: float = 0.0) -> bool:
        """Whether the work spent so far (and `running` seconds of a step not yet charged) is past it."""
        return self.spent_seconds + running > self.seconds

    @contextmanager
    def timed(self) -> Iterator[Callable[[], bool]]:
        """Charge the calling thread's CPU time of the block; yields a check that counts it so far."""
        started = time.thread_time()
        try:
            yield lambda: self.over_time(time.thread_time() - started)
        finally:
            self.charge(time.thread_time() - started)

    @property
    def inflation_left(self) -> int:
        return max(0, self.inflation_bytes - self.inflated_bytes)

    def inflated(self, nbytes: int) -> None:
        with self._lock:
            self.inflated_bytes += nbytes
