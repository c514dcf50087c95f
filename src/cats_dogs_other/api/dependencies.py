"""The FastAPI dependencies every prediction route shares, in the order they run: the token check, the
served model, admission. They run before the body is read: an unauthenticated client, or one that
arrives while the service is full, cannot make it parse an upload."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Security
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cats_dogs_other.api.clients import client_key
from cats_dogs_other.api.handoff import AdmittedRoute, RequestHandoff, VerifiedToken
from cats_dogs_other.api.state import Phase, ServedModel, ServiceState
from cats_dogs_other.auth.bearer import (
    KEYS_RETRY_AFTER_SECONDS,
    KEYS_UNAVAILABLE_DETAIL,
    BearerRefusal,
    bearer_token,
)
from cats_dogs_other.auth.jwks import KeysUnavailableError
from cats_dogs_other.auth.tokens import AuthFailure
from cats_dogs_other.inference.admission import Refusal
from cats_dogs_other.inference.batching import QueueFullError
from cats_dogs_other.inference.service import InferenceService

RETRY_AFTER_SECONDS = "5"
KEYS_UNAVAILABLE = "keys_unavailable"  # cdo_refusals_total's reason when the provider's keys are missing
log = logging.getLogger(__name__)

# Declares the scheme in OpenAPI (Swagger's Authorize button); the header itself is parsed below.
bearer_scheme = HTTPBearer(
    auto_error=False,
    bearerFormat="JWT",
    scheme_name="bearerAuth",
    description="An OAuth2 access token (JWT) from the configured OpenID Connect provider, "
    "with the scope get::prediction.",
)


def get_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


State = Annotated[ServiceState, Depends(get_state)]


def not_serving(state: ServiceState) -> HTTPException:
    """503 with Retry-After, worded by phase."""
    why = "loading its model" if state.phase is Phase.STARTING else "shutting down"
    return HTTPException(503, f"The service is {why}; retry shortly.", {"Retry-After": RETRY_AFTER_SECONDS})


def serving_model(state: State) -> ServedModel:
    """The served model, or 503 while it loads or the service stops."""
    model = state.predicting_model
    if model is None:
        raise not_serving(state)
    return model


# The model a request is answered by: resolved once per request, so the engine it runs on and the
# version it names are the same model even if an alias moves while it is answered (api/following.py).
Served = Annotated[ServedModel, Depends(serving_model)]


async def admitted_engine(
    request: Request, state: State, model: Annotated[ServedModel, Depends(serving_model)]
) -> AsyncIterator[InferenceService]:
    """Admission control, after the token check and before the body is read: past what can be answered
    within MAX_QUEUE_WAIT_MS (or QUEUE_MAX requests in flight), or past this client's share while the
    service is full, 503 at once. Behind Uvicorn with `LimitedHttpProtocol` the protocol admitted the
    request already (`server.shedding`); otherwise (in-process apps, a token whose keys had to be fetched)
    it is admitted here."""
    handoff = RequestHandoff.of(request.scope)
    if handoff.ticket is not None:
        yield model.engine
        return
    claims = handoff.token.claims if handoff.token else None
    client = client_key(claims, client_address(request, state))
    ticket = model.engine.admission.try_admit(client)
    if isinstance(ticket, Refusal):
        state.metrics.refusals.labels(ticket.kind.value).inc()
        raise QueueFullError(ticket.reason, ticket.retry_after_seconds)
    try:
        yield model.engine
    finally:
        ticket.release()


Engine = Annotated[InferenceService, Depends(admitted_engine)]


def client_address(request: Request, state: ServiceState) -> str:
    """The client's address: the peer's, or what a trusted proxy's X-Forwarded-For names."""
    peer = request.client.host if request.client else None
    forwarded = [value.encode("latin-1") for value in request.headers.getlist("x-forwarded-for")]
    return state.proxies.client_address(peer, forwarded)


async def feedback_engine(
    model: Annotated[ServedModel, Depends(serving_model)],
) -> AsyncIterator[InferenceService]:
    """Admission for feedback (it decodes the image it stores): counted apart from predictions, whose
    time-based limit it must not move, against QUEUE_MAX only."""
    with model.engine.feedback_admission.admitted():
        yield model.engine


FeedbackEngine = Annotated[InferenceService, Depends(feedback_engine)]


def _refuse(request: Request, state: ServiceState, refusal: BearerRefusal) -> HTTPException:
    log.info(
        "request refused: %s",
        refusal.reason.value,
        extra={
            "reason": refusal.reason.value,
            "request_id": request.scope.get("state", {}).get("request_id"),
        },
    )
    state.metrics.refused_token(refusal.reason.value, refusal.refusal_reason)
    return HTTPException(refusal.status, refusal.detail, {"WWW-Authenticate": refusal.challenge})


async def _checked_claims(request: Request, state: ServiceState, scope: str) -> dict[str, Any] | None:
    """The token check per RFC 6750 for `scope`: the token's claims, or None when auth is disabled.
    Tokens are never logged, failures by reason only. A token the HTTP protocol checked already (before
    admitting the request, `server.shedding`) is not checked twice."""
    settings = state.settings
    if settings.auth_disabled:
        return None
    handoff = RequestHandoff.of(request.scope)
    if handoff.token is not None and handoff.token.scope == scope:
        return handoff.token.claims
    if state.token_validator is None:
        raise HTTPException(503, settings.auth_configuration_error() or "Authentication is not available.")
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise _refuse(request, state, BearerRefusal.missing())
    try:
        with state.tracer.start_as_current_span("auth"):
            claims = await state.token_validator.validate(token, scope)
    except AuthFailure as failure:
        raise _refuse(request, state, BearerRefusal.of(failure, scope)) from None
    except KeysUnavailableError:
        log.warning("request refused: the identity provider's keys are unavailable")
        state.metrics.refusals.labels(KEYS_UNAVAILABLE).inc()
        raise HTTPException(503, KEYS_UNAVAILABLE_DETAIL, {"Retry-After": KEYS_RETRY_AFTER_SECONDS}) from None
    handoff.token = VerifiedToken(scope, claims)
    return claims


async def require_prediction_token(
    request: Request, state: State, _: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)]
) -> None:
    await _checked_claims(request, state, state.settings.oauth2_required_scope)


async def feedback_subject(
    request: Request, state: State, _: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)]
) -> str | None:
    """The token check for feedback (FEEDBACK_REQUIRED_SCOPE): the token's `sub`, the only claim kept;
    None when auth is disabled (anonymous feedback)."""
    claims = await _checked_claims(request, state, state.settings.feedback_required_scope)
    if claims is None:
        return None
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise HTTPException(403, "The token has no subject (sub): feedback must name who sent it.")
    return subject  # the store keeps it as it is, or hashed past its column's size


PredictionToken = Depends(require_prediction_token)
FeedbackSubject = Annotated[str | None, Depends(feedback_subject)]


def admitted_routes(routers: list[APIRouter]) -> tuple[AdmittedRoute, ...]:
    """The routes that depend on admission (`admitted_engine`), found in the routers themselves: what
    the transport authenticates and admits, with no list to keep in step. (The routers' own routes:
    FastAPI's app keeps included routers nested, privately.)"""
    return tuple(
        AdmittedRoute(frozenset(m.encode() for m in route.methods or ()), route.path_regex, route.path)
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute) and _depends_on_admission(route.dependant)
    )


def _depends_on_admission(dependant: Dependant) -> bool:
    return any(sub.call is admitted_engine or _depends_on_admission(sub) for sub in dependant.dependencies)
