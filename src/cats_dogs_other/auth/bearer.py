"""RFC 6750 bearer tokens over HTTP, without a web framework: where the token is, how a refusal reads."""

from __future__ import annotations

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
