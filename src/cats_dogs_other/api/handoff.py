"""What the transport (the `server` package: Uvicorn's protocol) and the app hand each other, declared
once, here.

- App to transport, once: the app's lifespan yields a `TransportState` under `TRANSPORT_STATE_KEY`
  (the service, and which routes the transport authenticates and admits); Uvicorn gives the lifespan
  state to every connection's protocol.
- Transport to app, per request: a `RequestHandoff` in the request's scope state under
  `REQUEST_HANDOFF_KEY`: the admission place the transport took (given back by the app's middleware
  when it is done), and the token it checked. The app's own token check fills in the same record when
  the transport did not (in-process apps, a key that had to be fetched), so that a token is checked once
  and admission knows the client.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from cats_dogs_other.api.state import ServiceState
from cats_dogs_other.inference.admission import Ticket

TRANSPORT_STATE_KEY = "cats_dogs_other.transport"
REQUEST_HANDOFF_KEY = "cats_dogs_other.handoff"


@dataclass(frozen=True)
class AdmittedRoute:
    """A route whose requests go through admission: its methods, path pattern and template."""

    methods: frozenset[bytes]
    pattern: re.Pattern[str]
    template: str


@dataclass(frozen=True)
class TransportState:
    service: ServiceState
    admitted_routes: tuple[AdmittedRoute, ...]


@dataclass(frozen=True)
class VerifiedToken:
    """A token checked for `scope`, and its claims."""

    scope: str
    claims: dict[str, Any]


@dataclass
class RequestHandoff:
    ticket: Ticket | None = None  # the place the transport took for the request
    token: VerifiedToken | None = None

    @staticmethod
    def of(scope: MutableMapping[str, Any]) -> RequestHandoff:
        """The request's record, made empty the first time it is asked for."""
        return RequestHandoff.in_state(scope.setdefault("state", {}))

    @staticmethod
    def in_state(state: dict[str, Any]) -> RequestHandoff:
        """The record in a request's scope state (`scope["state"]`)."""
        handoff: RequestHandoff | None = state.get(REQUEST_HANDOFF_KEY)
        if handoff is None:
            handoff = state[REQUEST_HANDOFF_KEY] = RequestHandoff()
        return handoff
