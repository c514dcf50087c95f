"""RFC 6750 bearer tokens over HTTP, without a web framework: where the token is, how a refusal reads."""

from __future__ import annotations

from dataclasses import dataclass

from cats_dogs_other.auth.tokens import AuthFailure, FailureReason

REALM = "cats-dogs-other"


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None for no header or another scheme.

    Only this header counts, never a query parameter or cookie (RFC 6750 §2.1 is the one method every
    client supports, and URLs end up in logs).
    """
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip()


def challenge(error: str | None = None, description: str | None = None, scope: str | None = None) -> str:
    """The `WWW-Authenticate` value of a refusal (RFC 6750 §3)."""
    parts = [f'realm="{REALM}"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append('error_description="{}"'.format(description.replace('"', "'").replace("\\", "/")))
    if scope:
        parts.append(f'scope="{scope}"')
    return "Bearer " + ", ".join(parts)


MISSING_TOKEN_DETAIL = "A bearer token is required: send 'Authorization: Bearer <access token>'."
KEYS_UNAVAILABLE_DETAIL = "The identity provider's signing keys cannot be fetched right now; retry shortly."
KEYS_RETRY_AFTER_SECONDS = "10"


@dataclass(frozen=True)
class BearerRefusal:
    """How a request without a usable token is answered, wherever it is refused (the HTTP protocol or
    the app): the same status, words and challenge."""

    reason: FailureReason
    status: int
    detail: str
    challenge: str

    @property
    def refusal_reason(self) -> str:
        """What `cdo_refusals_total` counts it as."""
        return "forbidden" if self.status == 403 else "unauthenticated"

    @classmethod
    def missing(cls) -> BearerRefusal:
        return cls(FailureReason.MISSING, 401, MISSING_TOKEN_DETAIL, challenge())

    @classmethod
    def of(cls, failure: AuthFailure, scope: str) -> BearerRefusal:
        """401 `invalid_token`, or 403 `insufficient_scope` naming the scope needed."""
        if failure.reason is FailureReason.SCOPE:
            header = challenge("insufficient_scope", failure.description, scope)
            return cls(failure.reason, 403, failure.description, header)
        return cls(failure.reason, 401, failure.description, challenge("invalid_token", failure.description))
