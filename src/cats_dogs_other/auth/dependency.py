"""The FastAPI dependency that guards prediction routes, answering per RFC 6750.

It runs before the request body is read, so an unauthenticated client cannot make the service parse
uploads. Tokens come only from the `Authorization: Bearer` header, never a query parameter or cookie,
and are never logged: failures are logged by reason only.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cats_dogs_other.api.runtime import get_runtime
from cats_dogs_other.auth.jwks import KeysUnavailableError
from cats_dogs_other.auth.tokens import AuthFailure, FailureReason

REALM = "cats-dogs-other"
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


def challenge(error: str | None = None, description: str | None = None, scope: str | None = None) -> str:
    parts = [f'realm="{REALM}"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append('error_description="{}"'.format(description.replace('"', "'").replace("\\", "/")))
    if scope:
        parts.append(f'scope="{scope}"')
    return "Bearer " + ", ".join(parts)


def _refuse(request: Request, reason: FailureReason, status: int, detail: str, header: str) -> HTTPException:
    log.info(
        "request refused: %s",
        reason.value,
        extra={"reason": reason.value, "request_id": request.scope.get("state", {}).get("request_id")},
    )
    get_runtime(request).metrics.auth_failures.labels(reason.value).inc()
    return HTTPException(status, detail, {"WWW-Authenticate": header})


async def require_prediction_token(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)]
) -> None:
    runtime = get_runtime(request)
    settings = runtime.settings
    if settings.auth_disabled:
        return
    if runtime.token_validator is None:
        raise HTTPException(503, settings.auth_configuration_error() or "Authentication is not available.")
    header = request.headers.get("authorization")
    scheme, _sep, token = (header or "").partition(" ")
    if not header or scheme.lower() != "bearer":
        raise _refuse(
            request,
            FailureReason.MISSING,
            401,
            "A bearer token is required: send 'Authorization: Bearer <access token>'.",
            challenge(),
        )
    try:
        with runtime.tracer.start_as_current_span("auth"):
            await runtime.token_validator.validate(token.strip())
    except AuthFailure as failure:
        if failure.reason is FailureReason.SCOPE:
            scope = settings.oauth2_required_scope
            raise _refuse(
                request,
                failure.reason,
                403,
                failure.description,
                challenge("insufficient_scope", failure.description, scope),
            ) from None
        raise _refuse(
            request, failure.reason, 401, failure.description, challenge("invalid_token", failure.description)
        ) from None
    except KeysUnavailableError:
        log.warning("request refused: the identity provider's keys are unavailable")
        raise HTTPException(
            503,
            "The identity provider's signing keys cannot be fetched right now; retry shortly.",
            {"Retry-After": KEYS_RETRY_AFTER_SECONDS},
        ) from None
