"""The FastAPI dependencies every prediction route shares, in the order they run: the token check, the
served model, admission. They run before the body is read: an unauthenticated client, or one that
arrives while the service is full, cannot make it parse an upload."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cats_dogs_other.api.state import Phase, ServedModel, ServiceState
from cats_dogs_other.auth.bearer import bearer_token, challenge
from cats_dogs_other.auth.jwks import KeysUnavailableError
from cats_dogs_other.auth.tokens import AuthFailure, FailureReason
from cats_dogs_other.inference.service import InferenceService

RETRY_AFTER_SECONDS = "5"
# Where the HTTP protocol leaves an admitted request's place (`inference.admission.Ticket`).
ADMISSION_TICKET_KEY = "cats_dogs_other.admission_ticket"
KEYS_RETRY_AFTER_SECONDS = "10"
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


async def admitted_engine(
    request: Request, model: Annotated[ServedModel, Depends(serving_model)]
) -> AsyncIterator[InferenceService]:
    """Admission control, before the body is read: past what can be answered within MAX_QUEUE_WAIT_MS
    (or QUEUE_MAX requests in flight), 503 at once. Behind Uvicorn with `LimitedHttpProtocol` the
    protocol admitted the request already (`api.shedding`); otherwise it is admitted here."""
    if ADMISSION_TICKET_KEY in request.scope.get("state", {}):
        yield model.engine
        return
    with model.engine.admission.admitted():
        yield model.engine


Engine = Annotated[InferenceService, Depends(admitted_engine)]


async def feedback_engine(
    model: Annotated[ServedModel, Depends(serving_model)],
) -> AsyncIterator[InferenceService]:
    """Admission for feedback (it decodes the image it stores): counted apart from predictions, whose
    time-based limit it must not move, against QUEUE_MAX only."""
    with model.engine.feedback_admission.admitted():
        yield model.engine


FeedbackEngine = Annotated[InferenceService, Depends(feedback_engine)]


def _refuse(
    request: Request, state: ServiceState, reason: FailureReason, status: int, detail: str, header: str
) -> HTTPException:
    log.info(
        "request refused: %s",
        reason.value,
        extra={"reason": reason.value, "request_id": request.scope.get("state", {}).get("request_id")},
    )
    state.metrics.auth_failures.labels(reason.value).inc()
    return HTTPException(status, detail, {"WWW-Authenticate": header})


async def _checked_claims(request: Request, state: ServiceState, scope: str) -> dict[str, Any] | None:
    """The token check per RFC 6750 for `scope`: the token's claims, or None when auth is disabled.
    Tokens are never logged, failures by reason only."""
    settings = state.settings
    if settings.auth_disabled:
        return None
    if state.token_validator is None:
        raise HTTPException(503, settings.auth_configuration_error() or "Authentication is not available.")
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise _refuse(
            request,
            state,
            FailureReason.MISSING,
            401,
            "A bearer token is required: send 'Authorization: Bearer <access token>'.",
            challenge(),
        )
    try:
        with state.tracer.start_as_current_span("auth"):
            return await state.token_validator.validate(token, scope)
    except AuthFailure as failure:
        if failure.reason is FailureReason.SCOPE:
            header = challenge("insufficient_scope", failure.description, scope)
            raise _refuse(request, state, failure.reason, 403, failure.description, header) from None
        header = challenge("invalid_token", failure.description)
        raise _refuse(request, state, failure.reason, 401, failure.description, header) from None
    except KeysUnavailableError:
        log.warning("request refused: the identity provider's keys are unavailable")
        raise HTTPException(
            503,
            "The identity provider's signing keys cannot be fetched right now; retry shortly.",
            {"Retry-After": KEYS_RETRY_AFTER_SECONDS},
        ) from None


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
    if len(subject) > 255:  # the column's size; a hash keeps distinct subjects distinct
        return "sha256:" + hashlib.sha256(subject.encode()).hexdigest()
    return subject


PredictionToken = Depends(require_prediction_token)
FeedbackSubject = Annotated[str | None, Depends(feedback_subject)]
