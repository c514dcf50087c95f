"""End to end against a real OpenID Connect provider (node-oidc-provider on loopback) and a real server."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import ServeProcess
from tests.oidc_provider import AUDIENCE, oidc_provider


@pytest.fixture(scope="module")
def oidc_issuer() -> Iterator[str]:
    with oidc_provider() as issuer:
        yield issuer


def client_token(issuer: str, client_id: str, secret: str, scope: str) -> str:
    response = httpx.post(
        f"{issuer}/token",
        auth=(client_id, secret),
        data={"grant_type": "client_credentials", "scope": scope},
        timeout=10,
    )
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


def upload(server: ServeProcess, token: str, image: Path) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/upload",
        headers={"Authorization": f"Bearer {token}"},
        files={"file": (image.name, image.read_bytes())},
        timeout=30,
    )


def serve(tmp: Path, env: dict[str, str]) -> ServeProcess:
    command = [
        sys.executable,
        "-m",
        "cats_dogs_other.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
    ]
    return ServeProcess(command, tmp / "serve.log", env=env).start()


@pytest.fixture(scope="module")
def protected_server(oidc_issuer: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """Configured with the issuer and audience only: keys found through OpenID discovery."""
    server = serve(
        tmp_path_factory.mktemp("e2e"), {"OAUTH2_ISSUER": oidc_issuer, "OAUTH2_AUDIENCE": AUDIENCE}
    )
    yield server
    server.stop()


def test_token_from_the_provider_gets_a_prediction(
    oidc_issuer: str, protected_server: ServeProcess, sample_files: dict[str, Path]
) -> None:
    token = client_token(oidc_issuer, "predictor", "predictor-secret", "get::prediction")
    response = upload(protected_server, token, sample_files["Dog"])
    assert response.status_code == 200, response.text
    assert response.json()["prediction"] == "Dog"


def test_token_without_the_scope_is_403(
    oidc_issuer: str, protected_server: ServeProcess, sample_files: dict[str, Path]
) -> None:
    token = client_token(oidc_issuer, "no-scope", "no-scope-secret", "other::thing")
    response = upload(protected_server, token, sample_files["Dog"])
    assert response.status_code == 403
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="cats-dogs-other", error="insufficient_scope"')
    assert challenge.endswith('scope="get::prediction"')


def test_no_token_is_401_and_the_token_is_not_logged(
    oidc_issuer: str, protected_server: ServeProcess, sample_files: dict[str, Path]
) -> None:
    response = httpx.post(
        f"{protected_server.base_url}/upload",
        files={"file": ("dog.png", sample_files["Dog"].read_bytes())},
        timeout=30,
    )
    assert response.status_code == 401
    token = client_token(oidc_issuer, "predictor", "predictor-secret", "get::prediction")
    httpx.post(
        f"{protected_server.base_url}/upload",
        headers={"Authorization": f"Bearer {token}"},
        files={"file": ("x.png", b"not an image")},
        timeout=30,
    )
    assert token.split(".")[1] not in protected_server.logs()
    assert token.split(".")[2] not in protected_server.logs()


def test_course_style_relative_jwks_uri(
    oidc_issuer: str, tmp_path: Path, sample_files: dict[str, Path]
) -> None:
    # The course sets OAUTH2_JWKS_URI to a path under the issuer; oidc-provider publishes its keys at /jwks.
    server = serve(
        tmp_path, {"OAUTH2_ISSUER": oidc_issuer, "OAUTH2_AUDIENCE": AUDIENCE, "OAUTH2_JWKS_URI": "jwks"}
    )
    try:
        token = client_token(oidc_issuer, "predictor", "predictor-secret", "get::prediction")
        response = upload(server, token, sample_files["Cat"])
        assert response.status_code == 200, response.text
        assert response.json()["prediction"] == "Cat"
        assert "/.well-known/openid-configuration" not in server.logs()
    finally:
        server.stop()
