"""Every validation rule, through the app, with keys and a JWKS the tests serve over real HTTP."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from fastapi.testclient import TestClient

from cats_dogs_other.api import create_app
from cats_dogs_other.inference.classifier import ImageClassifier
from cats_dogs_other.settings import Settings
from tests.auth.conftest import AUDIENCE, FakeProvider, make_key


@pytest.fixture(scope="module")
def image(sample_files: dict[str, Path]) -> bytes:
    return sample_files["Cat"].read_bytes()


def upload(client: TestClient, image: bytes, token: str | None = None, **headers: str) -> httpx.Response:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return client.post("/upload", files={"file": ("cat.png", image, "image/png")}, headers=headers)


def assert_refused(response: httpx.Response, status: int, challenge: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith(challenge)
    assert response.json()["status"] == status


@pytest.mark.parametrize(
    "algorithm", ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]
)
def test_every_asymmetric_algorithm_is_accepted(
    provider: FakeProvider, auth_client: TestClient, image: bytes, algorithm: str
) -> None:
    key = make_key(algorithm)
    provider.keys.append(key)
    response = upload(auth_client, image, provider.token(key))
    assert response.status_code == 200, response.text
    assert response.json()["prediction"] == "Cat"


@pytest.mark.parametrize("algorithm", ["RS256", "PS512", "ES384", "EdDSA"])
def test_keys_without_alg_allow_their_family(
    provider: FakeProvider, auth_client: TestClient, image: bytes, algorithm: str
) -> None:
    key = make_key(algorithm, publish_alg=False)
    provider.keys.append(key)
    assert upload(auth_client, image, provider.token(key)).status_code == 200


def test_predict_is_protected_too(provider: FakeProvider, auth_client: TestClient, image: bytes) -> None:
    parts = [("files", ("cat.png", image))]
    assert_refused(auth_client.post("/predict", files=parts), 401, 'Bearer realm="cats-dogs-other"')
    response = auth_client.post(
        "/predict", files=parts, headers={"Authorization": f"Bearer {provider.token()}"}
    )
    assert response.json()[0]["prediction"] == "Cat"


def test_open_routes_need_no_token(auth_client: TestClient) -> None:
    for path in ("/health", "/ready", "/version", "/docs", "/redoc", "/openapi.json"):
        assert auth_client.get(path).status_code == 200, path


def test_version_shows_the_auth_setup_without_secrets(
    provider: FakeProvider, auth_client: TestClient
) -> None:
    auth = auth_client.get("/version").json()["auth"]
    assert auth == {
        "mode": "oauth2",
        "issuer": provider.issuer,
        "audience": AUDIENCE,
        "required_scope": "get::prediction",
        "client_id": None,  # no web page client configured
        "audience_parameter": "audience",
    }


def test_missing_token_is_401_with_the_realm(auth_client: TestClient, image: bytes) -> None:
    response = upload(auth_client, image)
    assert_refused(response, 401, 'Bearer realm="cats-dogs-other"')
    assert "error=" not in response.headers["www-authenticate"]


def test_token_is_checked_before_the_body_is_read(auth_client: TestClient) -> None:
    # Not even multipart: an anonymous client gets 401, not 415, and the body is never parsed.
    response = auth_client.post("/upload", content=b"x" * 1000, headers={"Content-Type": "text/plain"})
    assert_refused(response, 401, 'Bearer realm="cats-dogs-other"')


@pytest.mark.parametrize(
    "header",
    [
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer ",
        "bearer",
        "Token abc",
        "Bearer a.b",
        "Bearer ...",
        "Bearer " + "A" * 20_000,
        "Bearer eyJhbGciOiJSUzI1NiJ9.e30.\x7f",
        "Bearer not-a-jwt-at-all",
    ],
    ids=[
        "basic",
        "bare",
        "empty",
        "lower-bare",
        "other-scheme",
        "two-parts",
        "dots",
        "huge",
        "control",
        "garbage",
    ],
)
def test_malformed_authorization_headers_are_401(auth_client: TestClient, image: bytes, header: str) -> None:
    response = auth_client.post(
        "/upload", files={"file": ("c.png", image)}, headers={"Authorization": header}
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith('Bearer realm="cats-dogs-other"')


def test_token_in_query_or_cookie_is_ignored(
    provider: FakeProvider, auth_client: TestClient, image: bytes
) -> None:
    token = provider.token()
    response = auth_client.post(f"/upload?access_token={token}", files={"file": ("c.png", image)})
    assert_refused(response, 401, 'Bearer realm="cats-dogs-other"')
    auth_client.cookies.set("access_token", token)
    assert_refused(upload(auth_client, image), 401, 'Bearer realm="cats-dogs-other"')
    auth_client.cookies.clear()


def now() -> int:
    return int(time.time())


TIME_CLAIMS = ("exp", "nbf", "iat")


def at_signing(claims: dict[str, object]) -> dict[str, object]:
    """Turn time claims given as seconds from now into timestamps when the token is signed.

    Parameters are built at collection, minutes before a late test runs: an absolute `now() + 120`
    would be in the past by then.
    """
    return {
        name: now() + value if name in TIME_CLAIMS and isinstance(value, int) else value
        for name, value in claims.items()
    }


@pytest.mark.parametrize(
    ("claims", "description"),
    [
        ({"exp": -120}, "expired"),
        ({"nbf": 120}, "not valid yet"),
        ({"iat": 120}, "not valid yet"),
        ({"exp": None}, "no exp claim"),
        ({"iss": "https://evil.example.org/"}, "another issuer"),
        ({"iss": None}, "no iss claim"),
        ({"aud": "https://another-api.example.org"}, "not meant for this API"),
        ({"aud": None}, "no aud claim"),
    ],
    ids=["expired", "nbf-future", "iat-future", "no-exp", "wrong-iss", "no-iss", "wrong-aud", "no-aud"],
)
def test_claims_are_checked(
    provider: FakeProvider, auth_client: TestClient, image: bytes, claims: dict[str, object], description: str
) -> None:
    response = upload(auth_client, image, provider.token(**at_signing(claims)))
    assert_refused(response, 401, 'Bearer realm="cats-dogs-other", error="invalid_token"')
    assert description in response.headers["www-authenticate"]
    assert description in response.json()["detail"]


def test_leeway_tolerates_small_clock_skew(
    provider: FakeProvider, make_auth_client: Callable[..., TestClient], image: bytes
) -> None:
    client = make_auth_client(oauth2_leeway_seconds=30)
    assert upload(client, image, provider.token(exp=now() - 10, nbf=now() + 10)).status_code == 200
    strict = make_auth_client(oauth2_leeway_seconds=0)
    assert upload(strict, image, provider.token(exp=now() - 10)).status_code == 401


def test_audience_list_containing_ours_is_accepted(
    provider: FakeProvider, auth_client: TestClient, image: bytes
) -> None:
    token = provider.token(aud=["https://other.example.org", AUDIENCE])
    assert upload(auth_client, image, token).status_code == 200


@pytest.mark.parametrize("typ", ["at+jwt", "application/at+jwt", "JWT", None])
def test_access_token_types_are_accepted(
    provider: FakeProvider, auth_client: TestClient, image: bytes, typ: str | None
) -> None:
    token = provider.token(headers={"typ": typ} if typ else {"typ": None})
    assert upload(auth_client, image, token).status_code == 200


def test_other_token_types_are_refused(provider: FakeProvider, auth_client: TestClient, image: bytes) -> None:
    token = provider.token(headers={"typ": "logout+jwt"})
    assert_refused(
        upload(auth_client, image, token), 401, 'Bearer realm="cats-dogs-other", error="invalid_token"'
    )


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_alg_none_is_refused(provider: FakeProvider, auth_client: TestClient, image: bytes) -> None:
    claims = jwt.decode(provider.token(), options={"verify_signature": False})
    unsigned = f"{_b64({'alg': 'none', 'kid': 'rsa-1'})}.{_b64(claims)}."
    assert_refused(
        upload(auth_client, image, unsigned), 401, 'Bearer realm="cats-dogs-other", error="invalid_token"'
    )


def test_hmac_with_the_public_key_as_secret_is_refused(
    provider: FakeProvider, auth_client: TestClient, image: bytes
) -> None:
    # The classic key-confusion attack: sign with HS256 using the published RSA public key as the secret.
    public_pem = (
        provider.keys[0]
        .private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    claims = jwt.decode(provider.token(), options={"verify_signature": False})
    header = _b64({"alg": "HS256", "kid": "rsa-1", "typ": "at+jwt"})
    payload = _b64(claims)
    import hashlib
    import hmac

    signature = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    forged = f"{header}.{payload}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"
    response = upload(auth_client, image, forged)
    assert_refused(response, 401, 'Bearer realm="cats-dogs-other", error="invalid_token"')
    assert "algorithm is not accepted" in response.json()["detail"]


def test_algorithm_is_chosen_by_the_key_not_the_header(
    provider: FakeProvider, auth_client: TestClient, image: bytes
) -> None:
    # The RSA key declares RS256; a PS256 signature by the same key must not be accepted.
    token = provider.token(algorithm="PS256")
    response = upload(auth_client, image, token)
    assert_refused(response, 401, 'Bearer realm="cats-dogs-other", error="invalid_token"')
    assert "does not match its signing key" in response.json()["detail"]
    ec_key = make_key("ES256", publish_alg=False)
    provider.keys.append(ec_key)
    wrong_family = jwt.encode(
        {"iss": provider.issuer}, provider.keys[0].private, algorithm="RS256", headers={"kid": ec_key.kid}
    )
    assert upload(auth_client, image, wrong_family).status_code == 401


def test_tampered_payload_is_refused(provider: FakeProvider, auth_client: TestClient, image: bytes) -> None:
    header, payload, signature = provider.token(scope="other::thing").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["scope"] = "get::prediction"
    forged = f"{header}.{_b64(claims)}.{signature}"
    response = upload(auth_client, image, forged)
    assert_refused(response, 401, 'Bearer realm="cats-dogs-other", error="invalid_token"')
    assert "signature" in response.json()["detail"]


def test_signature_by_an_unpublished_key_is_refused(
    provider: FakeProvider, auth_client: TestClient, image: bytes
) -> None:
    impostor = make_key("RS256", kid="rsa-1")  # same kid, different key
    response = upload(auth_client, image, provider.token(impostor))
    assert_refused(response, 401, 'Bearer realm="cats-dogs-other", error="invalid_token"')
    unknown = make_key("RS256", kid="never-published")
    response = upload(auth_client, image, provider.token(unknown))
    assert "does not publish" in response.json()["detail"]


@pytest.mark.parametrize(
    "claims",
    [
        {"scope": "openid get::prediction profile"},
        {"scope": None, "scp": "get::prediction"},
        {"scope": None, "scp": ["read", "get::prediction"]},
        {"scope": None, "permissions": ["get::prediction"]},
    ],
    ids=["scope", "scp-string", "scp-list", "auth0-permissions"],
)
def test_scope_is_found_where_providers_put_it(
    provider: FakeProvider, auth_client: TestClient, image: bytes, claims: dict[str, object]
) -> None:
    assert upload(auth_client, image, provider.token(**claims)).status_code == 200


@pytest.mark.parametrize(
    "claims",
    [
        {"scope": None},
        {"scope": "get::predictions"},
        {"scope": "get::prediction-admin"},
        {"scope": "get"},
        {"scope": None, "permissions": "get::prediction::all"},
    ],
    ids=["none", "plural", "suffix", "prefix", "permissions-string"],
)
def test_scope_must_match_as_a_whole_word(
    provider: FakeProvider, auth_client: TestClient, image: bytes, claims: dict[str, object]
) -> None:
    response = upload(auth_client, image, provider.token(**claims))
    assert_refused(response, 403, 'Bearer realm="cats-dogs-other", error="insufficient_scope"')
    assert 'scope="get::prediction"' in response.headers["www-authenticate"]


def test_required_scope_is_configurable(
    provider: FakeProvider, make_auth_client: Callable[..., TestClient], image: bytes
) -> None:
    client = make_auth_client(oauth2_required_scope="predict")
    assert upload(client, image, provider.token(scope="predict")).status_code == 200
    assert upload(client, image, provider.token()).status_code == 403


def test_tokens_never_reach_the_logs(
    provider: FakeProvider, auth_client: TestClient, image: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    good, expired = provider.token(), provider.token(exp=now() - 999)
    upload(auth_client, image, good)
    upload(auth_client, image, expired)
    upload(auth_client, image, "garbage.token.value")
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    for token in (good, expired):
        for part in token.split("."):
            assert part not in text
    assert "garbage.token.value" not in text
    assert any(getattr(r, "reason", None) == "expired" for r in caplog.records)


def test_without_an_issuer_predictions_are_refused(classifier: ImageClassifier, image: bytes) -> None:
    client = TestClient(create_app(Settings(), classifier))
    with client:
        wait = client.get("/ready")
        assert wait.status_code in (200, 503)
        response = upload(client, image)
        assert response.status_code == 503
        assert "OAUTH2_ISSUER and OAUTH2_AUDIENCE not set" in response.json()["detail"]
        assert client.get("/health").status_code == 200


def test_serve_refuses_to_start_without_an_issuer() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "cats_dogs_other.cli", "serve"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2
    assert "OAUTH2_ISSUER and OAUTH2_AUDIENCE not set" in done.stderr
    assert "--no-auth" in done.stderr
