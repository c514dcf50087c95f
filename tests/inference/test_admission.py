"""Admission by expected wait: the rate is measured over busy time, and the limit is what it answers
within the budget, between the floor and QUEUE_MAX."""

from __future__ import annotations

import pytest

from cats_dogs_other.inference.admission import (
    RATE_WINDOW_SECONDS,
    AdmissionControl,
    FairShare,
    Refusal,
    RefusalKind,
    ServiceRate,
    Ticket,
)
from cats_dogs_other.inference.batching import QueueFullError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def control(clock: Clock, *, max_in_flight: int = 128, wait: float = 0.5, floor: int = 8) -> AdmissionControl:
    return AdmissionControl(
        max_in_flight=max_in_flight, max_wait_seconds=wait, min_in_flight=floor, clock=clock
    )


def serve(admission: AdmissionControl, clock: Clock, answers: int, each: float, at_once: int = 1) -> None:
    """`answers` requests, `at_once` in progress at a time, each taking `each` seconds."""
    for _ in range(answers // at_once):
        tickets = [admission.try_admit() for _ in range(at_once)]
        clock.now += each
        for ticket in tickets:
            assert isinstance(ticket, Ticket)
            ticket.release()


def test_until_a_rate_is_measured_the_limit_is_queue_max() -> None:
    admission = control(Clock(), max_in_flight=5)
    assert admission.limit == 5
    tickets = [admission.try_admit() for _ in range(5)]
    assert all(isinstance(t, Ticket) for t in tickets)
    refusal = admission.try_admit()
    assert isinstance(refusal, Refusal)
    assert "QUEUE_MAX" in refusal.reason
    assert refusal.retry_after_seconds == 1


def test_the_limit_is_what_the_measured_rate_answers_within_the_budget() -> None:
    clock = Clock()
    admission = control(clock, wait=0.5)
    serve(admission, clock, answers=400, each=0.01, at_once=2)  # 200 answers per busy second
    assert admission.rate.per_second == pytest.approx(200, rel=0.01)
    assert admission.limit in (99, 100)  # 200/s x 0.5 s, rounded down


def test_idle_time_does_not_lower_the_rate() -> None:
    clock = Clock()
    admission = control(clock)
    serve(admission, clock, answers=200, each=0.005)
    measured = admission.rate.per_second
    clock.now += 3600  # an idle hour
    serve(admission, clock, answers=200, each=0.005)
    assert admission.rate.per_second == pytest.approx(measured)
    assert measured == pytest.approx(200, rel=0.01)


def test_a_slow_model_shuts_the_gate_to_the_floor_and_never_below() -> None:
    clock = Clock()
    admission = control(clock, floor=8)
    serve(admission, clock, answers=20, each=0.5)  # 2 answers per second: 1 request in 0.5 s
    assert admission.limit == 8
    tickets = [admission.try_admit() for _ in range(8)]
    assert all(isinstance(t, Ticket) for t in tickets)
    refusal = admission.try_admit()
    assert isinstance(refusal, Refusal)
    # 8 in progress at 2/s: 4 s of work ahead, said in the reason and in Retry-After
    assert refusal.retry_after_seconds == 4
    assert "about 4,000 ms of work" in refusal.reason
    assert "MAX_QUEUE_WAIT_MS" in refusal.reason


def test_queue_max_caps_a_fast_model() -> None:
    clock = Clock()
    admission = control(clock, max_in_flight=16, wait=10.0)
    serve(admission, clock, answers=1000, each=0.001)
    assert admission.limit == 16


def test_the_estimate_follows_a_change_of_rate_smoothly() -> None:
    clock = Clock()
    admission = control(clock)
    serve(admission, clock, answers=200, each=0.005)  # 200/s
    serve(admission, clock, answers=int(50 * RATE_WINDOW_SECONDS), each=0.02)  # one window at 50/s
    rate = admission.rate.per_second
    assert rate is not None
    assert 50 < rate < 200  # moved towards 50, not jumped to it
    serve(admission, clock, answers=500, each=0.02)
    assert admission.rate.per_second == pytest.approx(50, rel=0.05)


def test_a_ticket_gives_its_place_back_once() -> None:
    admission = control(Clock(), max_in_flight=1)
    ticket = admission.try_admit()
    assert isinstance(ticket, Ticket)
    ticket.release()
    ticket.release()  # the protocol and the app may both release it
    assert admission.in_flight == 0
    assert ticket.released


def test_admitted_raises_queue_full_with_the_retry_after() -> None:
    admission = control(Clock(), max_in_flight=1)
    with admission.admitted():
        with pytest.raises(QueueFullError) as caught, admission.admitted():
            pass
        assert caught.value.retry_after_seconds == 1
    assert admission.in_flight == 0


def test_service_rate_needs_a_whole_window_of_busy_time() -> None:
    clock = Clock()
    rate = ServiceRate(clock)
    rate.busy(clock.now)
    clock.now += RATE_WINDOW_SECONDS / 2
    rate.answered(clock.now)
    assert rate.per_second is None


def test_a_count_only_control_ignores_the_rate() -> None:
    clock = Clock()
    admission = AdmissionControl(
        max_in_flight=48, max_wait_seconds=0, min_in_flight=1, by_time=False, clock=clock
    )
    serve(admission, clock, answers=40, each=0.5)  # 2 answers per second
    assert admission.limit == 48


def full(admission: AdmissionControl, client: str, count: int) -> list[Ticket]:
    tickets = [admission.try_admit(client) for _ in range(count)]
    assert all(isinstance(t, Ticket) for t in tickets)
    return tickets  # type: ignore[return-value]


def test_a_client_alone_may_take_every_place() -> None:
    admission = control(Clock(), max_in_flight=10)
    full(admission, "hog", 10)
    refusal = admission.try_admit("hog")
    assert isinstance(refusal, Refusal)
    assert refusal.kind is RefusalKind.FULL  # nobody else waits: the service is simply full


def test_a_client_with_one_request_is_not_refused_because_another_holds_every_place() -> None:
    admission = control(Clock(), max_in_flight=250)
    full(admission, "hog", 250)
    assert isinstance(admission.try_admit("alice"), Ticket)  # under its share (125): let in past the limit
    assert isinstance(admission.try_admit("alice"), Ticket)
    refusal = admission.try_admit("hog")  # over its share while alice waits: refused first
    assert isinstance(refusal, Refusal)
    assert refusal.kind is RefusalKind.OVER_SHARE
    assert "its share being 125 while 1 other clients wait" in refusal.reason


def test_the_share_shrinks_as_clients_arrive_and_the_overshoot_stays_under_the_surplus() -> None:
    clock = Clock()
    admission = control(clock, max_in_flight=100)
    full(admission, "hog", 100)
    admitted = 0
    for n in range(200):  # 200 clients with one request each
        admitted += isinstance(admission.try_admit(f"client-{n}"), Ticket)
    # Each was let in only while the hog held more than its share past what was over the limit
    # already: the service stays under twice its limit, and then the newcomers wait like anyone.
    assert 0 < admitted < 100
    assert admission.in_flight < 2 * admission.limit
    refusal = admission.try_admit("late")
    assert isinstance(refusal, Refusal)
    assert refusal.kind is RefusalKind.FULL


def test_an_over_share_client_gets_places_again_once_the_service_is_under_its_limit() -> None:
    admission = control(Clock(), max_in_flight=4)
    hog = full(admission, "hog", 4)
    alice = admission.try_admit("alice")
    assert isinstance(alice, Ticket)
    assert admission.in_flight == 5
    hog[0].release()
    assert isinstance(admission.try_admit("hog"), Refusal)  # 4 in flight, the limit: still refused
    hog[1].release()
    assert isinstance(admission.try_admit("hog"), Ticket)  # 3 in flight: room for anyone


def test_many_clients_with_one_request_each_are_held_to_the_limit() -> None:
    admission = control(Clock(), max_in_flight=8)
    tickets = [admission.try_admit(f"client-{n}") for n in range(20)]
    assert sum(isinstance(t, Ticket) for t in tickets) == 8  # nobody holds more than a share of 1


def test_the_share_follows_the_measured_limit_on_a_fake_clock() -> None:
    clock = Clock()
    admission = control(clock, wait=0.5)
    serve(admission, clock, answers=400, each=0.01, at_once=2)  # 200/s: a limit of about 100
    limit = admission.limit
    full(admission, "hog", limit)
    assert admission.share("alice") == limit // 2
    full(admission, "alice", 3)
    assert admission.share("bob") == limit // 3


def test_fair_share_keeps_the_largest_holding_as_places_come_and_go() -> None:
    shares = FairShare()
    for client in ["a", "a", "a", "b", "b", "c"]:
        shares.take(client)
    assert (shares.largest, shares.clients) == (3, 3)
    shares.give_back("a")
    assert shares.largest == 2  # a and b hold 2
    shares.give_back("b")
    assert shares.largest == 2  # a still holds 2
    shares.give_back("a")
    assert shares.largest == 1
    for client in ["a", "b", "c"]:
        shares.give_back(client)
    assert (shares.largest, shares.clients, shares.held) == (0, 0, {})
