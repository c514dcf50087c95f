"""`/docs` (Swagger UI) and `/redoc` (ReDoc) from the package's own files: they render in Chromium with the
network cut off, under their CSP, and "Try it out" still reaches the service."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from playwright.sync_api import Route

from cats_dogs_other.web.docs import DOCS_CSP, REDOC_HTML, SWAGGER_UI_HTML
from tests.web.conftest import BrowserTab


def offline(tab: BrowserTab, base_url: str) -> list[str]:
    """Cut the tab off from everything but the service; the URLs it tried to reach elsewhere."""
    blocked: list[str] = []

    def only_the_service(route: Route) -> None:
        if route.request.url.startswith(base_url):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort("internetdisconnected")

    tab.page.route("**/*", only_the_service)
    return blocked


def csp_violations(tab: BrowserTab) -> list[str]:
    return [line for line in tab.console if "Content Security Policy" in line or "Refused to" in line]


def test_swagger_ui_renders_offline_and_tries_an_operation(tab: BrowserTab, open_server: str) -> None:
    blocked = offline(tab, open_server)
    page = tab.page
    page.goto(f"{open_server}/docs")
    page.wait_for_selector(".swagger-ui .info .title")
    assert page.locator(".swagger-ui .info .title").inner_text().startswith("cats-dogs-other")
    health = page.locator(".opblock-summary-path[data-path='/health']")
    health.click()
    page.get_by_role("button", name="Try it out").click()
    with page.expect_response(f"{open_server}/health") as answered:
        page.get_by_role("button", name="Execute").click()
    assert answered.value.json() == {"status": "OK"}
    tab.shoot("docs-swagger-offline")
    assert blocked == []
    assert csp_violations(tab) == []
    assert not [line for line in tab.console if line.startswith("pageerror")]


def test_redoc_renders_offline(tab: BrowserTab, open_server: str) -> None:
    blocked = offline(tab, open_server)
    page = tab.page
    page.goto(f"{open_server}/redoc")
    page.wait_for_selector("h1:has-text('cats-dogs-other')")
    page.wait_for_selector("text=/upload")
    tab.shoot("docs-redoc-offline")
    assert blocked == []
    # ReDoc 2 always shows Redocly's logo from its CDN (and hides it if it fails): the CSP stops that
    # request before it leaves the browser; nothing else is refused.
    refused = csp_violations(tab)
    assert all("https://cdn.redoc.ly/redoc/logo-mini.svg" in line for line in refused), refused
    assert not [line for line in tab.console if line.startswith("pageerror")]


def test_the_docs_pages_load_nothing_from_elsewhere_and_carry_their_csp(client: TestClient) -> None:
    for path, html in (("/docs", SWAGGER_UI_HTML), ("/redoc", REDOC_HTML)):
        response = client.get(path)
        assert response.status_code == 200
        assert response.text == html
        assert response.headers["content-security-policy"] == DOCS_CSP
        assert re.findall(r"(?:src|href|spec-url)\s*=\s*\"(?:https?:)?//", html) == [], path
        assert "<script>" not in html  # no inline script: the CSP allows none
        for asset in re.findall(r"(?:src|href)=\"(static/[^\"]+)\"", html):
            assert client.get(f"/{asset}").status_code == 200, asset
    assert "/docs" not in client.get("/openapi.json").json()["paths"]
