"""Admission by expected wait: a request is let in only if it can be answered within `MAX_QUEUE_WAIT_MS`.

A fixed count of requests in flight says nothing about time: 128 small JPEGs wait 0.6 s on two cores,
128 PDFs a minute. Here the engine measures the rate at which it answers requests while it has work
(`ServiceRate`) and, by Little's law, expects a newcomer to wait `in_flight / rate`; past the budget,
or past `QUEUE_MAX` as a hard cap, it is refused at once (503 with a Retry-After of that wait).
Everything here runs on the event loop, so plain counters are enough.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from cats_dogs_other.inference.batching import QueueFullError

# The rate is re-estimated from each half second of busy time (about 100 answers at saturation here),
# smoothed over the last few, so that a burst neither opens nor shuts the gate by itself.
RATE_WINDOW_SECONDS = 0.5
RATE_SMOOTHING = 0.3


class ServiceRate:
    """Requests answered per second of busy time (time with at least one request in flight).

    Idle time is left out, so the estimate is what the engine does when it has work, and it is kept
    while idle. Under light load it is lower than the capacity (a lone client waits for each answer),
    which only makes admission stricter when no one is queued anyway.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.per_second: float | None = None  # None until the first window is measured
        self._answered = 0
        self._busy = 0.0
        self._busy_since: float | None = None

    def busy(self, now: float) -> None:
        self._busy_since = now

    def idle(self, now: float) -> None:
        if self._busy_since is not None:
            self._busy += now - self._busy_since
            self._busy_since = None

    def answered(self, now: float) -> None:
        self._answered += 1
        busy = self._busy + (now - self._busy_since if self._busy_since is not None else 0.0)
        if busy < RATE_WINDOW_SECONDS:
            return
        measured = self._answered / busy
        previous = self.per_second
        self.per_second = measured if previous is None else previous + RATE_SMOOTHING * (measured - previous)
        self._answered, self._busy = 0, 0.0
        if self._busy_since is not None:
            self._busy_since = now


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused now, and when to come back."""

    reason: str
    retry_after_seconds: int


class AdmissionControl:
    """How many prediction requests may be in progress (read, decode, queue, model), decided by time."""

    def __init__(
        self,
        *,
        max_in_flight: int,
        max_wait_seconds: float,
        min_in_flight: int,
        by_time: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_in_flight = max_in_flight  # QUEUE_MAX: the hard cap, and the limit until a rate is known
        self.max_wait_seconds = max_wait_seconds
        self.by_time = by_time  # False: a plain count (QUEUE_MAX), for work whose rate says nothing here
        self.min_in_flight = min(min_in_flight, max_in_flight)  # never shut below what keeps cores busy
        self.in_flight = 0
        self.rate = ServiceRate(clock)
        self._clock = clock

    @property
    def limit(self) -> int:
        """Requests that can be in progress now and all be answered within the budget."""
        rate = self.rate.per_second
        if rate is None or not self.by_time:
            return self.max_in_flight
        by_time = math.floor(rate * self.max_wait_seconds)
        return max(self.min_in_flight, min(self.max_in_flight, by_time))

    def expected_wait_seconds(self) -> float | None:
        """How long a request let in now would wait for those ahead of it, by the measured rate."""
        rate = self.rate.per_second
        return None if not rate else self.in_flight / rate

    def refusal(self) -> Refusal | None:
        """None if a request would be let in now; else why not. Cheap: called for every request."""
        if self.in_flight < self.limit:
            return None
        wait = self.expected_wait_seconds()
        if wait is None:
            reason = f"{self.in_flight} requests are already in progress (QUEUE_MAX)"
        else:
            reason = (
                f"{self.in_flight} requests are in progress, about {wait * 1000:,.0f} ms of work at the "
                f"{self.rate.per_second:,.0f} requests/s it answers, over the "
                f"{self.max_wait_seconds * 1000:,.0f} ms an admitted request may wait (MAX_QUEUE_WAIT_MS)"
            )
        return Refusal(reason, max(1, math.ceil(wait or 0)))

    def try_admit(self) -> Ticket | Refusal:
        """A place for one request (give it back with `Ticket.release`), or why there is none."""
        refusal = self.refusal()
        if refusal is not None:
            return refusal
        if self.in_flight == 0:
            self.rate.busy(self._clock())
        self.in_flight += 1
        return Ticket(self)

    def _release(self) -> None:
        self.in_flight -= 1
        now = self._clock()
        self.rate.answered(now)
        if self.in_flight == 0:
            self.rate.idle(now)

    @contextmanager
    def admitted(self) -> Iterator[None]:
        """Hold a place for a request's whole life; QueueFullError at once when there is none."""
        ticket = self.try_admit()
        if isinstance(ticket, Refusal):
            raise QueueFullError(ticket.reason, ticket.retry_after_seconds)
        try:
            yield
        finally:
            ticket.release()


class Ticket:
    """One admitted request's place; released once, however many times `release` is called (the
    protocol and the app both release it, whichever sees the request end first)."""

    __slots__ = ("_control",)

    def __init__(self, control: AdmissionControl) -> None:
        self._control: AdmissionControl | None = control

    @property
    def released(self) -> bool:
        return self._control is None

    def release(self) -> None:
        if self._control is not None:
            self._control._release()
            self._control = None
