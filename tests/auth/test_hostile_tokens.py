"""Token headers are attacker-chosen JSON: against a real `serve` process with auth on, each odd header
is a 401 (never a 500) and leaves no traceback in the logs, so nobody can flood them without a token."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import ServeProcess, serve_command
from tests.auth.conftest import AUDIENCE, FakeProvider, make_key

pytestmark = pytest.mark.slow


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


HEADERS = {
    "alg as a list": {"alg": ["RS256"], "kid": "rsa-1", "typ": "at+jwt"},
    "alg as an object": {"alg": {"RS256": True}, "kid": "rsa-1"},
    "alg as a number": {"alg": 256, "kid": "rsa-1"},
    "kid as a list": {"alg": "RS256", "kid": ["rsa-1"]},
    "typ as an object": {"alg": "RS256", "kid": "rsa-1", "typ": {"at+jwt": 1}},
    "header an array": ["RS256"],
    "header deeply nested": {"alg": "RS256", "kid": json.loads("[" * 500 + "]" * 500)},
}


@pytest.fixture(scope="module")
def protected_server(
    provider_server: FakeProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    provider_server.keys = [make_key("RS256", kid="rsa-1")]
    command = [part for part in serve_command() if part != "--no-auth"]
    env = {"OAUTH2_ISSUER": provider_server.issuer, "OAUTH2_AUDIENCE": AUDIENCE}
    process = ServeProcess(command, tmp_path_factory.mktemp("auth") / "serve.log", env=env).start()
    yield process
    process.stop()


@pytest.mark.parametrize("name", sorted(HEADERS))
def test_odd_token_headers_are_401(
    protected_server: ServeProcess, sample_files: dict[str, Path], name: str
) -> None:
    token = f"{_b64(json.dumps(HEADERS[name]).encode())}.{_b64(b'{}')}.{_b64(b'signature')}"
    response = httpx.post(
        f"{protected_server.base_url}/upload",
        files={"file": ("cat.png", sample_files["Cat"].read_bytes())},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert response.status_code == 401, (name, response.text)
    assert response.headers["www-authenticate"].startswith('Bearer realm="cats-dogs-other", error=')


def test_odd_token_headers_leave_no_traceback(protected_server: ServeProcess) -> None:
    for header in HEADERS.values():
        token = f"{_b64(json.dumps(header).encode())}.{_b64(b'{}')}.{_b64(b'sig')}"
        httpx.post(f"{protected_server.base_url}/upload", headers={"Authorization": f"Bearer {token}"})
    logs = protected_server.logs()
    assert "Traceback" not in logs
    # Refused for what they are, by the protocol (no log line per refusal: a flood must not amplify).
    metrics = httpx.get(f"{protected_server.base_url}/metrics").text
    assert 'cdo_auth_failures_total{reason="algorithm"}' in metrics
