"""Authentication and admission in the HTTP protocol: a prediction request is refused, or admitted, as
soon as its headers are parsed, before Uvicorn starts the app for it.

Refused inside the app, each surplus request cost the whole stack (an ASGI task, the middlewares,
routing, dependencies, the exception handlers), so at 256 clients the event loop spent its time refusing.
Here the protocol asks `LoadShedder.admit`, in this order:
1. the token, with auth on: checked with the cached keys (about 0.1 ms, no await). A request without a
   valid token is answered 401/403 here and never takes a place: a flood of tokenless requests cannot
   take the places of token holders. Only a token whose key is not cached, while a fetch of the key set
   may still find it, goes on to the app unadmitted; the app awaits the fetch (never the event loop),
   then checks and admits it (`admitted_engine`).
2. admission, by client (`api.clients`): the token's subject, or the address; past the limit, or past
   the client's share of a full service, 503.
The admitted request's place travels with it, with its checked token (`api.handoff.RequestHandoff`), and
is given back when the app is done with it (`RequestContextMiddleware`) or the connection is lost.
Servers that do not use this protocol (tests' in-process apps) authenticate and admit in the route's
dependencies instead.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from cats_dogs_other.api.clients import FORWARDED_FOR_HEADER, client_key
from cats_dogs_other.api.dependencies import KEYS_UNAVAILABLE
from cats_dogs_other.api.handoff import TRANSPORT_STATE_KEY, AdmittedRoute, TransportState, VerifiedToken
from cats_dogs_other.api.state import ServiceState
from cats_dogs_other.auth.bearer import (
    KEYS_RETRY_AFTER_SECONDS,
    KEYS_UNAVAILABLE_DETAIL,
    BearerRefusal,
    bearer_token,
)
from cats_dogs_other.auth.jwks import KeysPendingError, KeysUnavailableError
from cats_dogs_other.auth.tokens import AuthFailure
from cats_dogs_other.inference.admission import Ticket

# Where the first connection leaves the shedder it built, for the others (Uvicorn's lifespan state).
SHEDDER_STATE_KEY = "cats_dogs_other.load_shedder"
SHED_LOG_INTERVAL_SECONDS = 10.0  # one summary line, not one line per refusal: logs must not amplify load
# A 401/403 has no Retry-After: the pacing of a connection that keeps sending bad tokens stops here.
MAX_TOKEN_PACE_SECONDS = 1.0
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Refused:
    """A prediction request answered by the protocol: why (`cdo_refusals_total`'s reason) and how."""

    reason: str
    status: HTTPStatus
    detail: str
    headers: dict[str, str]
    retry_after_seconds: float  # how long its connection is left unread at most (`server.protocol` pacing)
    failure: str | None = None  # a token's: why it failed (`cdo_auth_failures_total`'s reason)


@dataclass(frozen=True)
class Admitted:
    """A prediction request let in by the protocol: its place, and the token it checked."""

    ticket: Ticket
    token: VerifiedToken | None


@dataclass(frozen=True)
class ArrivingRequest:
    """What the protocol knows of a request once its headers are parsed."""

    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    peer: str | None

    def header(self, name: bytes) -> bytes | None:
        return next((value for key, value in self.headers if key == name), None)


class LoadShedder:
    def __init__(self, state: ServiceState, routes: list[AdmittedRoute]) -> None:
        self.state = state
        self.routes = routes
        self.refused_since_log: Counter[str] = Counter()
        self._last_log = time.monotonic()

    @classmethod
    def of(cls, app_state: dict[str, object]) -> LoadShedder | None:
        """The server's shedder, built by its first connection from what the app's lifespan handed over
        (`TransportState`); None for an app that hands nothing over."""
        shedder = app_state.get(SHEDDER_STATE_KEY)
        if isinstance(shedder, LoadShedder):
            return shedder
        transport = app_state.get(TRANSPORT_STATE_KEY)
        if not isinstance(transport, TransportState):
            return None
        built = cls(transport.service, list(transport.admitted_routes))
        app_state[SHEDDER_STATE_KEY] = built
        return built

    def admit(self, request: ArrivingRequest) -> Refused | Admitted | None:
        """The answer this request gets now, its place, or None when the app decides: not a prediction
        request, the service starting or draining (the app has the words for that), or a token whose
        key must be fetched first."""
        model = self.state.predicting_model
        if model is None:
            return None
        route = self._route(request.method, request.target)
        if route is None:
            return None
        claims: dict[str, Any] | None = None
        if not self.state.settings.auth_disabled:
            checked = self._checked_token(request)
            if not isinstance(checked, dict):
                return self._refused(request, route, checked) if checked is not None else None
            claims = checked
        address = self.state.proxies.client_address(request.peer, self._forwarded_for(request))
        admitted = model.engine.admission.try_admit(client_key(claims, address))
        if isinstance(admitted, Ticket):
            scope = self.state.settings.oauth2_required_scope
            return Admitted(admitted, None if claims is None else VerifiedToken(scope, claims))
        refused = Refused(
            admitted.kind.value,
            HTTPStatus.SERVICE_UNAVAILABLE,
            f"The service is at capacity ({admitted.reason}); retry shortly.",
            {"Retry-After": str(admitted.retry_after_seconds)},
            admitted.retry_after_seconds,
        )
        return self._refused(request, route, refused)

    def _checked_token(self, request: ArrivingRequest) -> dict[str, Any] | Refused | None:
        """The token's claims, the refusal of a request without a valid one, or None: the app decides
        (auth misconfigured, or the key must be fetched)."""
        validator = self.state.token_validator
        if validator is None:
            return None
        authorization = request.header(b"authorization")
        token = bearer_token(authorization.decode("latin-1") if authorization is not None else None)
        scope = self.state.settings.oauth2_required_scope
        try:
            if token is None:
                refusal = BearerRefusal.missing()
            else:
                return validator.validate_now(token, scope)
        except AuthFailure as failure:
            refusal = BearerRefusal.of(failure, scope)
        except KeysPendingError:
            return None
        except KeysUnavailableError:
            return Refused(
                KEYS_UNAVAILABLE,
                HTTPStatus.SERVICE_UNAVAILABLE,
                KEYS_UNAVAILABLE_DETAIL,
                {"Retry-After": KEYS_RETRY_AFTER_SECONDS},
                int(KEYS_RETRY_AFTER_SECONDS),
            )
        self.state.metrics.auth_failures.labels(refusal.reason.value).inc()  # the refusal: in `_refused`
        return Refused(
            refusal.refusal_reason,
            HTTPStatus(refusal.status),
            refusal.detail,
            {"WWW-Authenticate": refusal.challenge},
            MAX_TOKEN_PACE_SECONDS,
            refusal.reason.value,
        )

    def _refused(self, request: ArrivingRequest, route: str, refused: Refused) -> Refused:
        metrics = self.state.metrics
        metrics.refusals.labels(refused.reason).inc()
        metrics.requests.labels(
            request.method.decode("ascii", "replace"), route, str(int(refused.status))
        ).inc()
        self._log_now_and_then(refused)
        return refused

    def _forwarded_for(self, request: ArrivingRequest) -> list[bytes]:
        if not self.state.proxies.networks:
            return []
        return [value for name, value in request.headers if name == FORWARDED_FOR_HEADER]

    def _route(self, method: bytes, target: bytes) -> str | None:
        path = target.split(b"?", 1)[0].decode("ascii", "replace")
        for route in self.routes:
            if method in route.methods and route.pattern.match(path):
                return route.template
        return None

    def _log_now_and_then(self, refused: Refused) -> None:
        """One summary line per interval, by reason, with the last refusal's words (each refusal at
        debug level only: logging every one would make a flood cost a log line per request)."""
        why = refused.reason if refused.failure is None else f"{refused.reason} ({refused.failure})"
        log.debug("request refused: %s", why)
        self.refused_since_log[why] += 1
        now = time.monotonic()
        if now - self._last_log >= SHED_LOG_INTERVAL_SECONDS:
            counts = ", ".join(f"{n} {reason}" for reason, n in self.refused_since_log.most_common())
            log.warning(
                "refused prediction requests in the last %.0f s: %s; the last: %s",
                now - self._last_log,
                counts,
                refused.detail,
            )
            self.refused_since_log.clear()
            self._last_log = now
