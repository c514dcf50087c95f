"""Access-token validation: signature by the provider's key, issuer, audience, time, scope.

The algorithm is chosen by the key (its `alg`, or the family its type allows), never by the token's
header alone; `none` and every HMAC algorithm are refused outright, so a public key can never be
used as an HMAC secret.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import jwt
from jwt.exceptions import (
    ExpiredSignatureError,
    ImmatureSignatureError,
    InvalidAudienceError,
    InvalidIssuedAtError,
    InvalidIssuerError,
    InvalidSignatureError,
    InvalidTokenError,
    MissingRequiredClaimError,
)

from cats_dogs_other.auth.jwks import JwksCache, SigningKey

log = logging.getLogger(__name__)

ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"}
)
_RSA = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_BY_CURVE = {
    "P-256": frozenset({"ES256"}),
    "P-384": frozenset({"ES384"}),
    "Ed25519": frozenset({"EdDSA"}),
    "Ed448": frozenset({"EdDSA"}),
}
ACCEPTED_TYPES = frozenset({"jwt", "at+jwt", "application/at+jwt", "application/jwt"})
MAX_TOKEN_LENGTH = 8192


class FailureReason(StrEnum):
    MISSING = "missing"
    MALFORMED = "malformed"
    ALGORITHM = "algorithm"
    UNKNOWN_KEY = "unknown_key"
    SIGNATURE = "signature"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    ISSUER = "issuer"
    AUDIENCE = "audience"
    CLAIMS = "claims"
    SCOPE = "insufficient_scope"


class AuthFailure(Exception):  # noqa: N818 (it is a failure of the client, not of the code)
    """Why a request is refused; `description` is safe to return to the client (no token content)."""

    def __init__(self, reason: FailureReason, description: str) -> None:
        super().__init__(description)
        self.reason = reason
        self.description = description


def algorithms_for(key: SigningKey) -> frozenset[str]:
    """The algorithms this key may verify: its declared `alg`, else what its type and curve allow."""
    declared = key.data.get("alg")
    if isinstance(declared, str):
        return frozenset({declared}) & ASYMMETRIC_ALGORITHMS
    if key.data.get("kty") == "RSA":
        return _RSA
    return _BY_CURVE.get(str(key.data.get("crv")), frozenset())


def granted_scopes(claims: dict[str, Any]) -> set[str]:
    """Scopes from `scope` (space-separated), `scp` (string or list) or `permissions` (Auth0 RBAC)."""
    granted: set[str] = set()
    for name in ("scope", "scp", "permissions"):
        value = claims.get(name)
        if isinstance(value, str):
            granted.update(value.split())
        elif isinstance(value, list):
            granted.update(item for item in value if isinstance(item, str))
    return granted


@dataclass(frozen=True)
class TokenValidator:
    keys: JwksCache
    issuer: str
    audience: str
    required_scope: str
    leeway_seconds: float = 30.0

    async def validate(self, token: str, scope: str | None = None) -> dict[str, Any]:
        """The claims of a token granted `scope` (default: `required_scope`, to predict); else AuthFailure
        (or KeysUnavailableError). Fetches the provider's keys when they must be."""
        algorithm, kid = self._header(token)
        return self._verified(token, await self.keys.key_for(kid), algorithm, scope)

    def validate_now(self, token: str, scope: str | None = None) -> dict[str, Any]:
        """`validate` without waiting, with the cached keys (about 0.1 ms): for the HTTP protocol,
        which decides on the event loop. KeysPendingError when only a fetch of the keys can tell."""
        algorithm, kid = self._header(token)
        return self._verified(token, self.keys.cached_key(kid), algorithm, scope)

    def _header(self, token: str) -> tuple[str, str | None]:
        """The token's algorithm and key id, refused unless it is a well-formed access token."""
        if not token or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
            raise AuthFailure(FailureReason.MALFORMED, "The access token is not a well-formed JWT.")
        try:
            header = jwt.get_unverified_header(token)
        except InvalidTokenError as exc:
            raise AuthFailure(FailureReason.MALFORMED, "The access token is not a well-formed JWT.") from exc
        algorithm = header.get("alg")
        # Header fields are attacker-chosen JSON: a list or an object must be refused, not hashed.
        if not isinstance(algorithm, str) or algorithm not in ASYMMETRIC_ALGORITHMS:
            raise AuthFailure(FailureReason.ALGORITHM, "The token's signing algorithm is not accepted.")
        token_type = header.get("typ")
        if token_type is not None and (
            not isinstance(token_type, str) or token_type.lower() not in ACCEPTED_TYPES
        ):
            raise AuthFailure(FailureReason.MALFORMED, "The token is not an access token (typ).")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AuthFailure(FailureReason.MALFORMED, "The token's key id is not a string.")
        return algorithm, kid

    def _verified(
        self, token: str, key: SigningKey | None, algorithm: str, scope: str | None
    ) -> dict[str, Any]:
        if key is None:
            raise AuthFailure(
                FailureReason.UNKNOWN_KEY, "The token is signed with a key the issuer does not publish."
            )
        if algorithm not in algorithms_for(key):
            raise AuthFailure(
                FailureReason.ALGORITHM, "The token's algorithm does not match its signing key."
            )
        claims = self._decode(token, key, algorithm)
        required = scope or self.required_scope
        if required not in granted_scopes(claims):
            raise AuthFailure(FailureReason.SCOPE, f"The token lacks the scope {required}.")
        return claims

    def _decode(self, token: str, key: SigningKey, algorithm: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.jwk.key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_seconds,
                options={"require": ["exp", "iss", "aud"], "verify_iat": True},
            )
        except ExpiredSignatureError as exc:
            raise AuthFailure(FailureReason.EXPIRED, "The token has expired.") from exc
        except (ImmatureSignatureError, InvalidIssuedAtError) as exc:
            raise AuthFailure(FailureReason.NOT_YET_VALID, "The token is not valid yet (nbf/iat).") from exc
        except InvalidIssuerError as exc:
            raise AuthFailure(FailureReason.ISSUER, "The token was issued by another issuer.") from exc
        except InvalidAudienceError as exc:
            raise AuthFailure(FailureReason.AUDIENCE, "The token is not meant for this API (aud).") from exc
        except MissingRequiredClaimError as exc:
            raise AuthFailure(FailureReason.CLAIMS, f"The token has no {exc.claim} claim.") from exc
        except InvalidSignatureError as exc:
            raise AuthFailure(FailureReason.SIGNATURE, "The token's signature is not valid.") from exc
        except InvalidTokenError as exc:
            raise AuthFailure(FailureReason.MALFORMED, "The access token is not valid.") from exc
        return claims
