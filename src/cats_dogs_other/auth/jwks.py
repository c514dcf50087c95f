"""The provider's signing keys, cached in memory and refreshed the way key rotation needs.

- Keys are kept for the provider's `Cache-Control: max-age` (default 1 h, at most 24 h). Once they are
  older, requests keep using them while one refresh runs in the background.
- A token signed with an unknown `kid` triggers one refresh, at most one per `min_refresh_interval`
  (10 s): a key the provider publishes is accepted 10 s after the previous fetch at the latest, and a
  flood of tokens with random `kid`s costs the provider one request per 10 s.
- Concurrent refreshes coalesce into one request.
- When the provider is unreachable the cached keys keep working; only with no usable key at all do
  requests fail, with `KeysUnavailableError` (503, not 401: the client did nothing wrong).
- Every document is read with a byte cap while it streams and within an overall deadline; redirects are
  followed only on the same host and never from https to http; plain http only on loopback.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
from jwt import PyJWK
from jwt.exceptions import PyJWTError

from cats_dogs_other.urls import require_https_unless_loopback

log = logging.getLogger(__name__)

MAX_DOCUMENT_BYTES = 512 * 1024
MAX_CACHE_SECONDS = 24 * 3600  # a provider's max-age beyond a day would outlive any rotation
MAX_REDIRECTS = 3
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*(\d+)", re.IGNORECASE)


class KeysUnavailableError(RuntimeError):
    """No usable signing key: the provider could not be reached and nothing is cached."""


class KeysPendingError(RuntimeError):
    """The key is not cached and a fetch may still find it: only `key_for` (which awaits) can tell."""


@dataclass(frozen=True)
class SigningKey:
    kid: str | None
    jwk: PyJWK
    data: dict[str, Any]


def resolve_jwks_location(issuer: str, jwks_uri: str | None) -> str | None:
    """An absolute `jwks_uri`, or a path joined to the issuer as the course does; None: use discovery."""
    if not jwks_uri:
        return None
    if urlsplit(jwks_uri).scheme:
        return jwks_uri
    return urljoin(issuer if issuer.endswith("/") else issuer + "/", jwks_uri.lstrip("/"))


def parse_max_age(cache_control: str | None, default: float) -> float:
    if cache_control and "no-store" not in cache_control.lower():
        match = _MAX_AGE.search(cache_control)
        if match:
            return min(float(match.group(1)), MAX_CACHE_SECONDS)
    return default


class JwksCache:
    def __init__(
        self,
        issuer: str,
        jwks_uri: str | None,
        client: httpx.AsyncClient,
        *,
        default_ttl: float,  # OAUTH2_JWKS_CACHE_SECONDS; defaults live in Settings only
        min_refresh_interval: float,  # OAUTH2_JWKS_MIN_REFRESH_SECONDS
        fetch_deadline: float,  # OAUTH2_FETCH_TIMEOUT_SECONDS
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = issuer
        self._jwks_uri = resolve_jwks_location(issuer, jwks_uri)
        self._client = client
        self._default_ttl = default_ttl
        self._min_refresh_interval = min_refresh_interval
        self._clock = clock
        self._keys: dict[str | None, SigningKey] = {}
        self._expires_at = float("-inf")
        self._last_attempt = float("-inf")
        self._inflight: asyncio.Task[None] | None = None
        self._background: asyncio.Task[None] | None = None
        self._fetch_deadline = fetch_deadline
        self.fetches = 0

    @property
    def keys(self) -> list[SigningKey]:
        return list(self._keys.values())

    async def key_for(self, kid: str | None) -> SigningKey | None:
        """The key with this `kid` (or the only key, for a token without one), refreshing when allowed.

        Returns None for a key the provider does not publish; raises KeysUnavailableError when there are
        no keys at all to check against.
        """
        if self._clock() >= self._expires_at:
            if self._keys:
                self._refresh_in_background()  # stale keys still verify while the new ones come
            else:
                await self._refresh_if_allowed()
        key = self._lookup(kid)
        if key is None:
            await self._refresh_if_allowed()
            key = self._lookup(kid)
        if key is None and not self._keys:
            raise KeysUnavailableError("no signing keys could be fetched from the identity provider")
        return key

    def cached_key(self, kid: str | None) -> SigningKey | None:
        """The key with this `kid` from the cache, without waiting (for the HTTP protocol, on the event
        loop): None for a key the provider does not publish, as far as a fetch allowed now could tell.

        Stale keys are used while a background refresh runs; KeysPendingError when the key is missing
        and a fetch is under way or allowed (`key_for` then decides); KeysUnavailableError when there
        are no keys and none may be fetched yet.
        """
        if self._clock() >= self._expires_at and self._keys:
            self._refresh_in_background()
        key = self._lookup(kid)
        if key is not None:
            return key
        if self._inflight is not None or self._refresh_allowed():
            raise KeysPendingError("the key set must be fetched to know this key")
        if not self._keys:
            raise KeysUnavailableError("no signing keys could be fetched from the identity provider")
        return None

    def _refresh_allowed(self) -> bool:
        return self._clock() - self._last_attempt >= self._min_refresh_interval

    def _lookup(self, kid: str | None) -> SigningKey | None:
        if kid is None:
            return self.keys[0] if len(self._keys) == 1 else None
        return self._keys.get(kid)

    @property
    def refreshing(self) -> bool:
        background = self._background is not None and not self._background.done()
        return background or self._inflight is not None

    async def close(self) -> None:
        """Stop a background refresh (at shutdown, before the HTTP client closes)."""
        if self._background is not None and not self._background.done():
            self._background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._background

    async def settled(self) -> None:
        """Wait for a background refresh under way, if any (tests)."""
        if self._background is not None:
            await self._background

    def _refresh_in_background(self) -> None:
        if self._background is None or self._background.done():
            if self._inflight is None and not self._refresh_allowed():
                return
            self._background = asyncio.create_task(self.refresh(), name="jwks-refresh")

    async def _refresh_if_allowed(self) -> None:
        """Join a fetch under way, or start one if the last attempt is old enough."""
        if self._inflight is not None or self._refresh_allowed():
            await self.refresh()

    async def refresh(self) -> None:
        """Fetch the key set; concurrent callers share one request. Failures keep the old keys."""
        if self._inflight is None:
            self._last_attempt = self._clock()
            self._inflight = asyncio.create_task(self._fetch())
            self._inflight.add_done_callback(lambda _: setattr(self, "_inflight", None))
        try:
            await asyncio.shield(self._inflight)
        except Exception as exc:  # the provider is down or answered nonsense: keep what we have
            log.warning(
                "could not refresh signing keys; keeping %d cached",
                len(self._keys),
                extra={"error": type(exc).__name__, "reason": str(exc)[:200]},
            )

    async def _fetch(self) -> None:
        self.fetches += 1
        uri = self._jwks_uri or await self._discover()
        response, document = await self._get(uri)
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError(f"{uri} is not a JWK set")
        keys = {}
        for data in document["keys"]:
            key = _signing_key(data)
            if key is not None:
                keys[key.kid] = key
        if not keys:
            raise ValueError(f"{uri} holds no usable asymmetric signing key")
        self._keys = keys
        self._expires_at = self._clock() + parse_max_age(
            response.headers.get("cache-control"), self._default_ttl
        )
        log.info("fetched %d signing keys", len(keys), extra={"kids": [k for k in keys if k]})

    async def _discover(self) -> str:
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        _, document = await self._get(url)
        if not isinstance(document, dict) or not isinstance(document.get("jwks_uri"), str):
            raise ValueError(f"{url} has no jwks_uri")
        if document.get("issuer") not in (self.issuer, self.issuer.rstrip("/")):
            raise ValueError(f"{url} names issuer {document.get('issuer')!r}, not {self.issuer!r}")
        jwks_uri: str = document["jwks_uri"]
        require_https_unless_loopback(jwks_uri)
        self._jwks_uri = jwks_uri
        return jwks_uri

    async def _get(self, url: str) -> tuple[httpx.Response, Any]:
        """The JSON document at `url`: at most MAX_DOCUMENT_BYTES, within the fetch deadline."""
        async with asyncio.timeout(self._fetch_deadline):
            for _ in range(MAX_REDIRECTS + 1):
                require_https_unless_loopback(url)
                request = self._client.build_request("GET", url, headers={"Accept": "application/json"})
                response = await self._client.send(request, stream=True, follow_redirects=False)
                try:
                    if response.is_redirect:
                        url = _redirect_target(url, response.headers.get("location", ""))
                        continue
                    response.raise_for_status()
                    body = bytearray()
                    async for chunk in response.aiter_raw():
                        body += chunk
                        if len(body) > MAX_DOCUMENT_BYTES:
                            raise ValueError(f"{url} answered more than {MAX_DOCUMENT_BYTES} bytes")
                finally:
                    await response.aclose()
                return response, json.loads(body)
        raise ValueError(f"{url} redirected more than {MAX_REDIRECTS} times")


def _redirect_target(url: str, location: str) -> str:
    """Where a redirect may lead: the same host, and never from https to http."""
    target = urljoin(url, location)
    before, after = urlsplit(url), urlsplit(target)
    if after.hostname != before.hostname or (before.scheme == "https" and after.scheme != "https"):
        raise ValueError(f"{url} redirected to another host or to plain http; configure the final URL")
    return target


def _signing_key(data: object) -> SigningKey | None:
    """A JWK usable to verify signatures, or None (symmetric, encryption-only or malformed keys)."""
    if not isinstance(data, dict) or data.get("kty") not in {"RSA", "EC", "OKP"}:
        return None
    if data.get("use", "sig") != "sig" or "d" in data:  # never a private key, never an encryption key
        return None
    try:
        jwk = PyJWK(data, algorithm=_probe_algorithm(data))
    except (PyJWTError, ValueError, TypeError, KeyError, binascii.Error) as exc:
        log.warning(
            "skipping a malformed key in the JWK set", extra={"kid": data.get("kid"), "error": str(exc)}
        )
        return None
    kid = data.get("kid")
    return SigningKey(kid=kid if isinstance(kid, str) else None, jwk=jwk, data=data)


def _probe_algorithm(data: dict[str, Any]) -> str | None:
    """An algorithm PyJWK accepts for parsing this key; the allowed set is decided in `tokens.py`."""
    if isinstance(data.get("alg"), str):
        return str(data["alg"])
    return {"RSA": "RS256", "OKP": "EdDSA"}.get(data["kty"]) or {"P-256": "ES256", "P-384": "ES384"}.get(
        str(data.get("crv"))
    )
