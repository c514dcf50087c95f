"""A real Chromium (Debian's `chromium`, driven by Playwright) against the page on a real server."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from cats_dogs_other.api import create_app
from cats_dogs_other.inference.classifier import ImageClassifier
from cats_dogs_other.settings import Settings
from tests.api.conftest import client, make_client
from tests.servers import ready_server

__all__ = ["client", "make_client"]  # the API's in-process clients, for the tests without a browser

# Seconds a page may take to show what a test waits for (a model call on 2 busy cores included).
WAIT_MS = 30_000


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip(reason="chromium is not installed (`make test` installs Debian's chromium package)")
    with sync_playwright() as playwright:
        # --no-sandbox: the tests run as root, where Chromium's sandbox refuses to start.
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


@dataclass
class BrowserTab:
    """A page in a fresh browser context (no cookies or storage shared between tests), with what it
    logged and every URL it asked for, and screenshots kept under the test run's temporary folder."""

    page: Page
    shots: Path
    console: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    asked_scopes: list[str] = field(default_factory=list)  # what the last sign-in asked the provider for

    def shoot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=path, full_page=True)
        return path


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture
def tab(browser: Browser, screenshots: Path) -> Iterator[BrowserTab]:
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    tab = BrowserTab(page, screenshots)

    def on_console(message: ConsoleMessage) -> None:
        tab.console.append(f"{message.type}: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: tab.console.append(f"pageerror: {error}"))
    page.on("request", lambda request: tab.requests.append(request.url))
    yield tab
    context.close()


@pytest.fixture(scope="module")
def open_server(classifier: ImageClassifier) -> Iterator[str]:
    """The service with authentication off, as `make serve` runs it, and at most 4 files a request."""
    settings = Settings(auth_disabled=True, max_files_per_request=4)
    with ready_server(create_app(settings, classifier)) as base_url:
        yield base_url
