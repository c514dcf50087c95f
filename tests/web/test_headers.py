"""The page's files and headers, without a browser: what is served, and the policy it is served under."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from cats_dogs_other.settings import Settings
from cats_dogs_other.web.page import STATIC_DIR

PAGE_FILES = [
    "/",
    "/static/app.js",
    "/static/auth.js",
    "/static/style.css",
    "/static/vendor/oidc-client-ts.min.js",
]


def policy(header: str) -> dict[str, list[str]]:
    directives = [part.split() for part in header.split(";") if part.strip()]
    return {name: values for name, *values in directives}


@pytest.mark.parametrize("path", PAGE_FILES)
def test_every_page_file_is_served_under_a_strict_policy(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    csp = policy(response.headers["content-security-policy"])
    assert csp["default-src"] == ["'none'"]
    assert csp["script-src"] == ["'self'"]  # no inline script, no eval, no other origin
    assert csp["style-src"] == ["'self'"]
    assert csp["connect-src"] == ["'self'"]  # auth off: the page talks to this service only
    assert csp["frame-ancestors"] == ["'none'"]
    assert csp["base-uri"] == ["'none'"]
    assert csp["form-action"] == ["'none'"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-cache"


def test_with_auth_on_the_page_may_also_reach_the_issuer_and_nothing_else(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(
        auth_disabled=False,
        oauth2_issuer="https://tenant.eu.auth0.com/",
        oauth2_audience="https://api.example",
        oauth2_client_id="abc123",
    )
    csp = policy(client.get("/").headers["content-security-policy"])
    assert csp["connect-src"] == ["'self'", "https://tenant.eu.auth0.com"]
    auth = client.get("/version").json()["auth"]
    assert auth["client_id"] == "abc123"
    assert auth["audience_parameter"] == "audience"  # Auth0's, the course's provider
    assert "secret" not in client.get("/version").text.lower()


def test_the_page_has_no_inline_code_and_no_url_outside_the_service() -> None:
    html = (STATIC_DIR / "index.html").read_text()
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []  # every script is a file
    assert "style=" not in html
    assert "<style" not in html
    assert re.findall(r"\bon[a-z]+=", html) == []  # no inline event handlers
    for name in ("index.html", "app.js", "auth.js", "style.css"):
        text = (STATIC_DIR / name).read_text()
        assert re.findall(r"(?:src|href|url)\s*[=(]\s*[\"']?(?:https?:)?//", text) == [], name
        assert "innerHTML" not in text, name  # text is set as text: a file name cannot become markup
        assert re.findall(r"localStorage\s*[.\[]", text) == [], name  # the token stays in memory


def test_the_page_is_not_part_of_the_api_document_and_the_api_routes_are_unchanged(
    client: TestClient,
) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths
    assert not any(path.startswith("/static") for path in paths)
    assert {"/health", "/upload", "/predict", "/version"} <= set(paths)
    assert client.get("/health").json() == {"status": "OK"}
    assert client.get("/docs").status_code == 200
    assert client.get("/redoc").status_code == 200


def test_files_outside_the_static_folder_cannot_be_reached(client: TestClient) -> None:
    for path in ("/static/../page.py", "/static/%2e%2e/page.py", "/static/vendor/../../settings.py"):
        assert client.get(path).status_code == 404, path


def test_the_audience_parameter_is_one_the_page_knows() -> None:
    with pytest.raises(ValidationError):
        Settings(oauth2_audience_parameter="aud")  # type: ignore[arg-type]
    assert Settings(oauth2_audience_parameter="resource").oauth2_audience_parameter == "resource"
