"""Admission in the HTTP protocol: a prediction request is admitted, or refused, as soon as its headers
are parsed, before Uvicorn starts the app for it.

Refused inside the app, each surplus request cost the whole stack (an ASGI task, the middlewares,
routing, dependencies, the exception handlers), so at 256 clients the event loop spent its time refusing:
a refused client waited 140-620 ms for its 503, `/health` up to 154 ms, and the admitted requests, starved
of the loop, up to 3.6 s. Here the protocol asks `LoadShedder.admit` (an integer comparison) and either
answers the 503 itself or takes the request's place in `AdmissionControl` at once, so that requests
parsed but not yet run by the app are counted too (counted only once the app reached them, a burst got
past the check by the hundred). The place travels with the request (`ADMISSION_TICKET_KEY` in its
scope's state) and is given back when the app is done with it (`RequestContextMiddleware`) or the
connection is lost. Requests are admitted before their token is checked; one refused with 401 gives
its place back at once. Servers that do not use this protocol (tests' in-process apps) are admitted
by the route's dependency instead (`admitted_engine`).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

from fastapi import APIRouter
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from cats_dogs_other.api.dependencies import admitted_engine
from cats_dogs_other.api.state import ServiceState
from cats_dogs_other.inference.admission import Refusal, Ticket

# Where the lifespan leaves the shedder for Uvicorn's protocols (its lifespan state, `app_state`).
SHEDDER_STATE_KEY = "cats_dogs_other.load_shedder"
SHED_LOG_INTERVAL_SECONDS = 10.0  # one summary line, not one line per refusal: logs must not amplify load
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdmittedRoute:
    """A route whose requests go through admission: its methods, path pattern and template."""

    methods: frozenset[bytes]
    pattern: re.Pattern[str]
    template: str


@dataclass(frozen=True)
class Shed:
    route: str
    refusal: Refusal


class LoadShedder:
    def __init__(self, state: ServiceState, routes: list[AdmittedRoute]) -> None:
        self.state = state
        self.routes = routes
        self.shed_since_log = 0
        self._last_log = time.monotonic()

    @classmethod
    def for_routers(cls, routers: list[APIRouter], state: ServiceState) -> LoadShedder:
        """The routes that depend on admission, found in the routers themselves: no list to keep in
        step. (The routers' own routes: FastAPI's app keeps included routers nested, privately.)"""
        routes = [
            AdmittedRoute(frozenset(m.encode() for m in route.methods or ()), route.path_regex, route.path)
            for router in routers
            for route in router.routes
            if isinstance(route, APIRoute) and _depends_on_admission(route.dependant)
        ]
        return cls(state, routes)

    def admit(self, method: bytes, target: bytes) -> Shed | Ticket | None:
        """The 503 this request gets now, its admission ticket, or None when it is not a prediction
        request (or the service is starting or draining: the app answers, with the words for that)."""
        model = self.state.predicting_model
        if model is None:
            return None
        route = self._route(method, target)
        if route is None:
            return None
        admitted = model.engine.admission.try_admit()
        if isinstance(admitted, Ticket):
            return admitted
        self.state.metrics.requests.labels(method.decode("ascii", "replace"), route, "503").inc()
        self._log_now_and_then(admitted)
        return Shed(route, admitted)

    def _route(self, method: bytes, target: bytes) -> str | None:
        path = target.split(b"?", 1)[0].decode("ascii", "replace")
        for route in self.routes:
            if method in route.methods and route.pattern.match(path):
                return route.template
        return None

    def _log_now_and_then(self, refusal: Refusal) -> None:
        self.shed_since_log += 1
        now = time.monotonic()
        if now - self._last_log >= SHED_LOG_INTERVAL_SECONDS:
            log.warning(
                "shed %d prediction requests in the last %.0f s with 503: %s",
                self.shed_since_log,
                now - self._last_log,
                refusal.reason,
            )
            self.shed_since_log = 0
            self._last_log = now


def _depends_on_admission(dependant: Dependant) -> bool:
    return any(sub.call is admitted_engine or _depends_on_admission(sub) for sub in dependant.dependencies)
