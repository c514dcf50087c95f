"""Keys the tests generate, tokens they sign, and a JWKS/discovery server on real loopback HTTP."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from fastapi.testclient import TestClient
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from cats_dogs_other.inference.classifier import ImageClassifier
from tests.api.conftest import client_factory
from tests.servers import ServerThread

AUDIENCE = "https://api.cats-dogs-other.test"
SCOPE = "get::prediction"


@dataclass
class TestKey:
    """A private key and the public JWK a provider would publish for it."""

    __test__ = False
    kid: str
    algorithm: str
    private: Any
    publish_alg: bool = True

    @property
    def public_jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            data = RSAAlgorithm.to_jwk(public, as_dict=True)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            data = ECAlgorithm.to_jwk(public, as_dict=True)
        else:
            data = OKPAlgorithm.to_jwk(public, as_dict=True)
        data = {**data, "kid": self.kid, "use": "sig"}
        if self.publish_alg:
            data["alg"] = self.algorithm
        return data


def make_key(algorithm: str, kid: str | None = None, publish_alg: bool = True) -> TestKey:
    if algorithm.startswith(("RS", "PS")):
        private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif algorithm == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    elif algorithm == "ES384":
        private = ec.generate_private_key(ec.SECP384R1())
    else:
        private = ed25519.Ed25519PrivateKey.generate()
    return TestKey(kid or f"{algorithm.lower()}-{uuid.uuid4().hex[:8]}", algorithm, private, publish_alg)


@dataclass
class FakeProvider:
    """The two documents an OpenID provider publishes for resource servers, on real HTTP.

    Tests change `keys`, `cache_control` and `down` between requests; `fetches` counts JWKS downloads.
    """

    issuer: str = ""
    keys: list[TestKey] = field(default_factory=list)
    extra_jwks: list[dict[str, Any]] = field(default_factory=list)
    cache_control: str | None = "public, max-age=3600"
    down: bool = False
    delay: float = 0.0
    fetches: int = 0
    discovery_issuer: str | None = None
    discovery_jwks_uri: str | None = None
    # Hostile answers: a body of this many bytes with no Content-Length, or one byte every `trickle` s.
    oversized_body: int = 0
    trickle: float = 0.0

    def app(self) -> Starlette:
        async def discovery(request: Request) -> Response:
            if self.down:
                return Response(status_code=503)
            jwks_uri = self.discovery_jwks_uri or f"{self.issuer}/keys/jwks.json"
            return JSONResponse({"issuer": self.discovery_issuer or self.issuer, "jwks_uri": jwks_uri})

        async def jwks(request: Request) -> Response:
            self.fetches += 1
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.down:
                return Response(status_code=503)
            headers = {"Cache-Control": self.cache_control} if self.cache_control else {}
            document = json.dumps({"keys": [k.public_jwk for k in self.keys] + self.extra_jwks}).encode()
            if self.oversized_body:
                padding = self.oversized_body

                async def endless() -> AsyncIterator[bytes]:
                    yield document[:-1] + b', "padding": "'
                    for _ in range(padding // 65536):
                        yield b"x" * 65536
                    yield b'"}'

                return StreamingResponse(endless(), media_type="application/json", headers=headers)
            if self.trickle:
                pause = self.trickle

                async def slowly() -> AsyncIterator[bytes]:
                    for byte in document:
                        yield bytes([byte])
                        await asyncio.sleep(pause)

                return StreamingResponse(slowly(), media_type="application/json", headers=headers)
            return Response(document, media_type="application/json", headers=headers)

        async def redirect(request: Request) -> Response:
            return RedirectResponse(request.query_params["to"], status_code=302)

        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", discovery),
                Route("/keys/jwks.json", jwks),
                Route("/redirect", redirect),
            ]
        )

    def token(
        self,
        key: TestKey | None = None,
        *,
        algorithm: str | None = None,
        headers: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """A signed access token; claims default to valid ones, pass `name=None` to drop one."""
        key = key or self.keys[0]
        now = int(time.time())
        body = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": "client-1",
            "iat": now,
            "exp": now + 300,
            "scope": SCOPE,
            **claims,
        }
        body = {k: v for k, v in body.items() if v is not None}
        header = {"kid": key.kid, "typ": "at+jwt", **(headers or {})}
        return jwt.encode(body, key.private, algorithm=algorithm or key.algorithm, headers=header)


@pytest.fixture(scope="session")
def provider_server() -> Iterator[FakeProvider]:
    provider = FakeProvider()
    with ServerThread(provider.app()) as base_url:
        provider.issuer = base_url
        yield provider


@pytest.fixture
def provider(provider_server: FakeProvider) -> FakeProvider:
    """The session's provider, reset to one RSA key and a healthy state for each test."""
    provider_server.keys = [make_key("RS256", kid="rsa-1")]
    provider_server.extra_jwks = []
    provider_server.cache_control = "public, max-age=3600"
    provider_server.down = False
    provider_server.delay = 0.0
    provider_server.fetches = 0
    provider_server.discovery_issuer = None
    provider_server.discovery_jwks_uri = None
    provider_server.oversized_body = 0
    provider_server.trickle = 0.0
    return provider_server


@pytest.fixture
def make_auth_client(
    provider: FakeProvider, classifier: ImageClassifier
) -> Iterator[Callable[..., TestClient]]:
    """Apps protected by `provider`, with settings overrides; started and warmed up."""
    yield from client_factory(classifier, {"oauth2_issuer": provider.issuer, "oauth2_audience": AUDIENCE})


@pytest.fixture
def auth_client(make_auth_client: Callable[..., TestClient]) -> TestClient:
    return make_auth_client()
