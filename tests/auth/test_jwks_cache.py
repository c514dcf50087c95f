"""The key cache against a JWKS served over real HTTP, with a clock the tests move by hand."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from cats_dogs_other.auth.jwks import JwksCache, KeysUnavailableError, parse_max_age, resolve_jwks_location
from cats_dogs_other.settings import Settings
from tests.auth.conftest import FakeProvider, make_key

_SETTINGS = Settings()
# The cache as the service configures it by default (OAUTH2_JWKS_*): a test overrides what it needs.
DEFAULTS = {
    "default_ttl": _SETTINGS.oauth2_jwks_cache_seconds,
    "min_refresh_interval": _SETTINGS.oauth2_jwks_min_refresh_seconds,
    "fetch_deadline": _SETTINGS.oauth2_fetch_timeout_seconds,
}

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def make_cache(
    provider: FakeProvider, http: httpx.AsyncClient, clock: ManualClock
) -> Callable[..., JwksCache]:
    def build(jwks_uri: str | None = None, **options: float) -> JwksCache:
        return JwksCache(provider.issuer, jwks_uri, http, clock=clock, **{**DEFAULTS, **options})

    return build


def test_jwks_location_rules() -> None:
    assert resolve_jwks_location("https://t.auth0.com/", ".well-known/jwks.json") == (
        "https://t.auth0.com/.well-known/jwks.json"
    )
    assert resolve_jwks_location("https://idp.example.org/realms/r", "protocol/openid-connect/certs") == (
        "https://idp.example.org/realms/r/protocol/openid-connect/certs"
    )
    assert (
        resolve_jwks_location("https://a.example/", "https://keys.example/jwks")
        == "https://keys.example/jwks"
    )
    assert resolve_jwks_location("https://a.example/", None) is None


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("public, max-age=120", 120),
        ("max-age=0", 0),
        ("no-cache", 3600),
        (None, 3600),
        ("no-store, max-age=60", 3600),
        ("s-maxage=5, max-age=77", 77),
    ],
)
def test_max_age_parsing(header: str | None, expected: float) -> None:
    assert parse_max_age(header, 3600) == expected


async def test_discovery_finds_the_key_set(
    provider: FakeProvider, make_cache: Callable[..., JwksCache]
) -> None:
    cache = make_cache()
    key = await cache.key_for("rsa-1")
    assert key is not None
    assert key.kid == "rsa-1"
    assert provider.fetches == 1


async def test_relative_jwks_path_is_joined_to_the_issuer(
    provider: FakeProvider, make_cache: Callable[..., JwksCache]
) -> None:
    assert await make_cache("keys/jwks.json").key_for("rsa-1") is not None


async def test_discovery_for_another_issuer_is_refused(
    provider: FakeProvider, make_cache: Callable[..., JwksCache]
) -> None:
    provider.discovery_issuer = "https://impostor.example.org"
    with pytest.raises(KeysUnavailableError):
        await make_cache().key_for("rsa-1")


async def test_keys_are_cached_for_max_age(
    provider: FakeProvider, make_cache: Callable[..., JwksCache], clock: ManualClock
) -> None:
    provider.cache_control = "max-age=300"
    cache = make_cache()
    await cache.key_for("rsa-1")
    clock.advance(299)
    await cache.key_for("rsa-1")
    assert provider.fetches == 1
    clock.advance(2)
    await cache.key_for("rsa-1")
    await cache.settled()
    assert provider.fetches == 2


async def test_default_lifetime_without_max_age(
    provider: FakeProvider, make_cache: Callable[..., JwksCache], clock: ManualClock
) -> None:
    provider.cache_control = None
    cache = make_cache(default_ttl=3600)
    await cache.key_for("rsa-1")
    clock.advance(3599)
    await cache.key_for("rsa-1")
    assert provider.fetches == 1
    clock.advance(2)
    await cache.key_for("rsa-1")
    await cache.settled()
    assert provider.fetches == 2


async def test_unknown_kids_refresh_at_most_once_per_interval(
    provider: FakeProvider, make_cache: Callable[..., JwksCache], clock: ManualClock
) -> None:
    cache = make_cache(min_refresh_interval=10)
    await cache.key_for("rsa-1")
    clock.advance(10)
    for i in range(200):  # a flood of random kids
        assert await cache.key_for(f"random-{i}") is None
        clock.advance(0.01)
    assert provider.fetches == 2  # the first fetch, then one refresh for the whole flood
    clock.advance(10)
    await cache.key_for("random-again")
    assert provider.fetches == 3


async def test_rotated_key_is_accepted_once_the_interval_has_passed(
    provider: FakeProvider, make_cache: Callable[..., JwksCache], clock: ManualClock
) -> None:
    cache = make_cache(min_refresh_interval=10)
    await cache.key_for("rsa-1")
    provider.keys = [make_key("RS256", kid="rsa-2")]  # the provider rotates
    clock.advance(9.9)
    assert await cache.key_for("rsa-2") is None
    assert await cache.key_for("rsa-1") is not None  # old key still cached
    clock.advance(0.1)
    assert (await cache.key_for("rsa-2")) is not None  # first request 10 s after the previous fetch
    assert provider.fetches == 2


async def test_concurrent_refreshes_coalesce(
    provider: FakeProvider, make_cache: Callable[..., JwksCache]
) -> None:
    provider.delay = 0.3
    cache = make_cache()
    results = await asyncio.gather(*(cache.key_for("rsa-1") for _ in range(25)))
    assert all(r is not None for r in results)
    assert provider.fetches == 1


async def test_outage_keeps_cached_keys(
    provider: FakeProvider, make_cache: Callable[..., JwksCache], clock: ManualClock
) -> None:
    provider.cache_control = "max-age=60"
    cache = make_cache()
    await cache.key_for("rsa-1")
    provider.down = True
    clock.advance(61)
    assert await cache.key_for("rsa-1") is not None  # stale but usable
    await cache.settled()
    assert provider.fetches == 2  # it did try
    assert await cache.key_for("rsa-1") is not None  # and the failed refresh kept the keys


async def test_expired_keys_serve_while_one_refresh_runs_in_the_background(
    provider: FakeProvider, make_cache: Callable[..., JwksCache], clock: ManualClock
) -> None:
    provider.cache_control = "max-age=60"
    cache = make_cache()
    await cache.key_for("rsa-1")
    provider.delay = 0.5  # the provider is slow: requests must not wait for it
    clock.advance(61)
    answers = [await cache.key_for("rsa-1") for _ in range(20)]
    assert all(key is not None for key in answers)
    assert cache.refreshing  # every answer came from the cache while the one refresh was still running
    await cache.settled()
    assert provider.fetches == 2
    assert not cache.refreshing


def test_max_age_is_capped_at_a_day() -> None:
    assert parse_max_age("max-age=31536000", 3600) == 24 * 3600


async def test_an_oversized_key_set_is_cut_off_while_it_streams(
    provider: FakeProvider, make_cache: Callable[..., JwksCache]
) -> None:
    provider.oversized_body = 64 << 20  # no Content-Length: only counting while reading can stop it
    cache = make_cache()
    with pytest.raises(KeysUnavailableError):
        await cache.key_for("rsa-1")


async def test_a_trickling_key_set_is_abandoned_at_the_deadline(
    provider: FakeProvider, make_cache: Callable[..., JwksCache]
) -> None:
    # Each byte comes well within httpx's read timeout; only an overall deadline stops this fetch.
    provider.trickle = 0.01  # the whole document would take several seconds
    with pytest.raises(KeysUnavailableError):
        await make_cache(fetch_deadline=0.3).key_for("rsa-1")
    provider.trickle = 0.0
    assert await make_cache(fetch_deadline=5.0).key_for("rsa-1") is not None


async def test_redirects_are_followed_on_the_same_host_only(
    provider: FakeProvider, make_cache: Callable[..., JwksCache]
) -> None:
    same_host = f"{provider.issuer}/redirect?to=/keys/jwks.json"
    assert await make_cache(same_host).key_for("rsa-1") is not None
    other_host = provider.issuer.replace("127.0.0.1", "localhost") + "/keys/jwks.json"
    with pytest.raises(KeysUnavailableError):
        await make_cache(f"{provider.issuer}/redirect?to={other_host}").key_for("rsa-1")


async def test_a_discovered_key_set_over_plain_http_is_refused(
    provider: FakeProvider, make_cache: Callable[..., JwksCache]
) -> None:
    provider.discovery_jwks_uri = "http://keys.example.org/jwks.json"  # anyone on the path could swap it
    with pytest.raises(KeysUnavailableError):
        await make_cache().key_for("rsa-1")
    assert provider.fetches == 0


async def test_outage_with_no_keys_is_unavailable(
    provider: FakeProvider, make_cache: Callable[..., JwksCache]
) -> None:
    provider.down = True
    with pytest.raises(KeysUnavailableError):
        await make_cache("keys/jwks.json").key_for("rsa-1")


async def test_unreachable_provider_is_unavailable_not_a_crash(
    http: httpx.AsyncClient, clock: ManualClock
) -> None:
    cache = JwksCache("http://127.0.0.1:9/", "jwks.json", http, clock=clock, **DEFAULTS)
    with pytest.raises(KeysUnavailableError):
        await cache.key_for("any")


async def test_symmetric_private_and_encryption_keys_are_ignored(
    provider: FakeProvider, make_cache: Callable[..., JwksCache]
) -> None:
    leaked_private = {**provider.keys[0].public_jwk, "kid": "priv", "d": "AQAB"}
    encryption = {**provider.keys[0].public_jwk, "kid": "enc", "use": "enc"}
    provider.extra_jwks = [
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        leaked_private,
        encryption,
        {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
    ]
    cache = make_cache()
    assert await cache.key_for("rsa-1") is not None
    assert {k.kid for k in cache.keys} == {"rsa-1"}
    provider.keys = []
    provider.extra_jwks = [{"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}]
    with pytest.raises(KeysUnavailableError):
        await make_cache().key_for("hmac")


async def test_token_without_kid_uses_the_only_key(
    provider: FakeProvider, make_cache: Callable[..., JwksCache]
) -> None:
    cache = make_cache()
    assert await cache.key_for(None) is not None
    provider.keys.append(make_key("ES256"))
    assert await make_cache().key_for(None) is None  # ambiguous with two keys


# Through the app, in real time: rotation and outages as a client sees them.


def _upload(client: TestClient, image: bytes, token: str) -> httpx.Response:
    return client.post(
        "/upload", files={"file": ("c.png", image)}, headers={"Authorization": f"Bearer {token}"}
    )


@pytest.mark.usefixtures("anyio_backend")
def test_app_accepts_a_rotated_key_after_the_refresh_interval(
    provider: FakeProvider, make_auth_client: Callable[..., TestClient], sample_files: dict[str, Path]
) -> None:
    image = sample_files["Cat"].read_bytes()
    client = make_auth_client(oauth2_jwks_min_refresh_seconds=0.5)
    assert _upload(client, image, provider.token()).status_code == 200
    new_key = make_key("ES256", kid="rotated")
    provider.keys.append(new_key)
    time.sleep(0.6)
    assert _upload(client, image, provider.token(new_key)).status_code == 200


@pytest.mark.usefixtures("anyio_backend")
def test_app_survives_an_outage_with_cached_keys(
    provider: FakeProvider, make_auth_client: Callable[..., TestClient], sample_files: dict[str, Path]
) -> None:
    image = sample_files["Cat"].read_bytes()
    provider.cache_control = "max-age=0"  # every request wants a refresh
    client = make_auth_client(oauth2_jwks_min_refresh_seconds=0)
    assert _upload(client, image, provider.token()).status_code == 200
    provider.down = True
    assert _upload(client, image, provider.token()).status_code == 200
    assert _upload(client, image, provider.token(make_key("RS256", kid="new"))).status_code == 401


@pytest.mark.usefixtures("anyio_backend")
def test_app_answers_503_when_no_keys_can_be_had(
    provider: FakeProvider, make_auth_client: Callable[..., TestClient], sample_files: dict[str, Path]
) -> None:
    provider.down = True
    client = make_auth_client()
    response = _upload(client, sample_files["Cat"].read_bytes(), provider.token())
    assert response.status_code == 503
    assert response.headers["retry-after"] == "10"
    assert response.headers["content-type"] == "application/problem+json"
    assert "signing keys" in response.json()["detail"]
