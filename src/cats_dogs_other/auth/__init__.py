"""OAuth2 bearer-token checks against any OpenID Connect provider's published keys."""

from cats_dogs_other.auth.jwks import JwksCache, KeysPendingError, KeysUnavailableError
from cats_dogs_other.auth.tokens import AuthFailure, TokenValidator

__all__ = ["AuthFailure", "JwksCache", "KeysPendingError", "KeysUnavailableError", "TokenValidator"]
