"""Admission by expected wait: a request is let in only if it can be answered within `MAX_QUEUE_WAIT_MS`.

A fixed count of requests in flight says nothing about time: 128 small JPEGs wait 0.6 s on two cores,
128 PDFs a minute. Here the engine measures the rate at which it answers requests while it has work
(`ServiceRate`) and, by Little's law, expects a newcomer to wait `in_flight / rate`; past the budget,
or past `QUEUE_MAX` as a hard cap, it is refused at once (503 with a Retry-After of that wait).

Places are shared between clients (`FairShare`): when the service is full, a client holding less than
its share (the limit divided among the clients with requests in progress) is still let in while
another holds more than its share, and the service is over its limit by less than that surplus; the
one over its share is refused until the service is back under its limit. So a client that took every
place while alone does not lock others out, and in-flight requests stay under twice the limit.
Everything here runs on the event loop, so plain counters are enough.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum

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


class RefusalKind(StrEnum):
    """Why admission said no, as operators count it (`cdo_refusals_total{reason}`)."""

    FULL = "full"  # no place left, and no client holds more than its share
    OVER_SHARE = "over_share"  # the client holds its share or more while others wait


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused now, and when to come back."""

    reason: str
    retry_after_seconds: int
    kind: RefusalKind = RefusalKind.FULL


class FairShare:
    """Places held per client, and the most any one client holds, kept in O(1) per change.

    The largest holding is kept with a count of clients per holding: when the one client at the top
    gives a place back, the top moves down by one (that client is now there). Only clients with a
    place are kept, so its size is bounded by the places themselves.
    """

    def __init__(self) -> None:
        self.held: dict[str, int] = {}
        self._clients_holding: Counter[int] = Counter()
        self.largest = 0

    @property
    def clients(self) -> int:
        return len(self.held)

    def take(self, client: str) -> None:
        before = self.held.get(client, 0)
        self.held[client] = before + 1
        if before:
            self._clients_holding[before] -= 1
        self._clients_holding[before + 1] += 1
        self.largest = max(self.largest, before + 1)

    def give_back(self, client: str) -> None:
        before = self.held[client]
        self._clients_holding[before] -= 1
        if before == 1:
            del self.held[client]
        else:
            self.held[client] = before - 1
            self._clients_holding[before - 1] += 1
        if before == self.largest and not self._clients_holding[before]:
            self.largest -= 1


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
        self.max_in_flight = max_in_flight  # QUEUE_MAX: the limit until a rate is known, and its ceiling
        self.max_wait_seconds = max_wait_seconds
        self.by_time = by_time  # False: a plain count (QUEUE_MAX), for work whose rate says nothing here
        self.min_in_flight = min(min_in_flight, max_in_flight)  # never shut below what keeps cores busy
        self.in_flight = 0
        self.rate = ServiceRate(clock)
        self.shares = FairShare()
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

    def share(self, client: str, limit: int | None = None) -> int:
        """The places `client` may hold when the service is full: the limit split evenly among the
        clients with requests in progress, `client` included; at least one."""
        clients = self.shares.clients + (client not in self.shares.held)
        return max(1, (self.limit if limit is None else limit) // clients)

    def refusal(self, client: str = "") -> Refusal | None:
        """None if `client`'s request would be let in now; else why not. Cheap: called for every
        request (a few integer comparisons)."""
        limit = self.limit
        if self.in_flight < limit:
            return None
        held = self.shares.held.get(client, 0)
        share = self.share(client, limit)
        over = self.shares.largest - share  # what the largest holder holds past its share
        if held < share and self.in_flight - limit < over:
            # Someone holds more than its share: this client gets in now, and that one is refused until
            # the service is back under its limit. The service runs past its limit by less than that
            # surplus, which is less than the limit (a client past its share is only let in under it).
            return None
        wait = self.expected_wait_seconds()
        retry_after = max(1, math.ceil(wait or 0))
        others = self.shares.clients - (client in self.shares.held)
        if held >= share and others:
            return Refusal(
                f"this client has {held} of the {self.in_flight} requests in progress, its share being "
                f"{share} while {others} other clients wait for answers",
                retry_after,
                RefusalKind.OVER_SHARE,
            )
        if wait is None:
            reason = f"{self.in_flight} requests are already in progress (QUEUE_MAX)"
        else:
            reason = (
                f"{self.in_flight} requests are in progress, about {wait * 1000:,.0f} ms of work at the "
                f"{self.rate.per_second:,.0f} requests/s it answers, over the "
                f"{self.max_wait_seconds * 1000:,.0f} ms an admitted request may wait (MAX_QUEUE_WAIT_MS)"
            )
        return Refusal(reason, retry_after)

    def try_admit(self, client: str = "") -> Ticket | Refusal:
        """A place for one request of `client` (give it back with `Ticket.release`), or why there is
        none. `client` names who sends it (a token's subject, an address); "" for everyone alike."""
        refusal = self.refusal(client)
        if refusal is not None:
            return refusal
        if self.in_flight == 0:
            self.rate.busy(self._clock())
        self.in_flight += 1
        self.shares.take(client)
        return Ticket(self, client)

    def _release(self, client: str) -> None:
        self.in_flight -= 1
        self.shares.give_back(client)
        now = self._clock()
        self.rate.answered(now)
        if self.in_flight == 0:
            self.rate.idle(now)

    @contextmanager
    def admitted(self, client: str = "") -> Iterator[None]:
        """Hold a place for a request's whole life; QueueFullError at once when there is none."""
        ticket = self.try_admit(client)
        if isinstance(ticket, Refusal):
            raise QueueFullError(ticket.reason, ticket.retry_after_seconds)
        try:
            yield
        finally:
            ticket.release()


class Ticket:
    """One admitted request's place; released once, however many times `release` is called (the
    protocol and the app both release it, whichever sees the request end first)."""

    __slots__ = ("_control", "client")

    def __init__(self, control: AdmissionControl, client: str) -> None:
        self._control: AdmissionControl | None = control
        self.client = client

    @property
    def released(self) -> bool:
        return self._control is None

    def release(self) -> None:
        if self._control is not None:
            self._control._release(self.client)
            self._control = None
