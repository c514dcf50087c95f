"""The page with authentication off, in a real Chromium against a real server: what a person sees."""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from cats_dogs_other.api import create_app
from cats_dogs_other.inference.classifier import ImageClassifier
from cats_dogs_other.settings import Settings
from tests.servers import ready_server, socket_port
from tests.web.conftest import WAIT_MS, BrowserTab


def open_page(tab: BrowserTab, base_url: str) -> Page:
    tab.page.goto(f"{base_url}/")
    tab.page.wait_for_selector("#model:not(:empty)")
    tab.page.wait_for_selector("#files:enabled")
    return tab.page


def labels_by_file(page: Page) -> dict[str, str]:
    cards = page.locator("article.result")
    return {
        card.get_attribute("data-file") or "": card.locator(".label").inner_text() for card in cards.all()
    }


def api_answer(base_url: str, name: str, data: bytes) -> dict[str, object]:
    response = httpx.post(f"{base_url}/predict", files=[("files", (name, data))], timeout=60)
    assert response.status_code == 200, response.text
    answer: dict[str, object] = response.json()[0]
    return answer


def test_photos_get_their_label_a_bar_per_class_and_what_the_model_saw(
    tab: BrowserTab, open_server: str, sample_files: dict[str, Path]
) -> None:
    page = open_page(tab, open_server)
    assert "cats-dogs-other-efficientnet-lite0" in page.inner_text("#model")
    assert "Cat, Dog, Other" in page.inner_text("#model")

    page.set_input_files("#files", [sample_files["Cat"], sample_files["Dog"]])
    page.wait_for_selector("article.result >> nth=1")

    assert labels_by_file(page) == {sample_files["Cat"].name: "Cat", sample_files["Dog"].name: "Dog"}
    cat = page.locator(f'article.result[data-file="{sample_files["Cat"].name}"]')
    assert cat.locator("meter").count() == 3  # one bar per label
    assert cat.locator("dt").all_inner_texts() == ["Cat", "Dog", "Other"]
    assert (cat.locator("img.thumb").get_attribute("src") or "").startswith("data:image/jpeg;base64,")
    assert page.inner_text("#status") == "Answered 2 files."
    tab.shoot("photos")


def test_a_pdf_shows_each_distinct_image_in_page_order_with_its_page_and_repeats_marked(
    tab: BrowserTab, open_server: str, course_pdfs: list[Path]
) -> None:
    # The first of the course's documents that repeats an image.
    for pdf in course_pdfs:
        expected = api_answer(open_server, pdf.name, pdf.read_bytes())
        images = expected["images"]
        assert isinstance(images, list)
        if any("duplicate_of" in image for image in images):
            break
    else:
        pytest.fail("none of the course's documents repeats an image")
    distinct = [image for image in images if "duplicate_of" not in image]
    repeated = [image for image in images if "duplicate_of" in image]

    page = open_page(tab, open_server)
    page.set_input_files("#files", pdf)
    page.wait_for_selector("article.document .tile")

    tiles = page.locator("article.document .tile").all()
    shown = [
        (int(tile.get_attribute("data-page") or -1), int(tile.get_attribute("data-index") or -1))
        for tile in tiles
    ]
    assert shown == [(image["page"], image["index"]) for image in distinct]
    assert [tile.locator(".label").inner_text() for tile in tiles] == [
        image["prediction"] for image in distinct
    ]
    assert tiles[0].locator(".where").inner_text() == f"Page {distinct[0]['page'] + 1}, image 1"
    repeats = page.locator("article.document .repeat").all_inner_texts()
    assert len(repeats) >= 1
    for image in repeated:
        assert any(f"page {image['page'] + 1}, image {image['index'] + 1}" in text for text in repeats)
    summary = page.locator("article.document > p.muted").inner_text()
    assert f"{expected['pages']} pages, {len(distinct)} distinct images" in summary
    tab.shoot("document")


def test_what_the_api_refuses_is_shown_in_its_own_words(
    tab: BrowserTab, open_server: str, tmp_path: Path, sample_files: dict[str, Path]
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    refused = api_answer(open_server, notes.name, notes.read_bytes())
    detail = refused["error"]["detail"]  # type: ignore[index]

    page = open_page(tab, open_server)
    page.set_input_files("#files", [notes, sample_files["Cat"]])
    page.wait_for_selector("article.failed")
    assert page.locator("article.failed .error").inner_text() == f"Not classified: {detail}"
    assert labels_by_file(page) == {sample_files["Cat"].name: "Cat"}  # the other file is still answered
    assert page.inner_text("#status") == "Answered 2 files; 1 could not be classified."
    tab.shoot("refused-file")

    # Five files where the service takes four: the whole request is refused, with the API's detail.
    too_many = [sample_files["Cat"]] * 5
    response = httpx.post(
        f"{open_server}/predict", files=[("files", (p.name, p.read_bytes())) for p in too_many], timeout=60
    )
    assert response.status_code == 400
    assert "4" in response.json()["detail"]
    page.set_input_files("#files", too_many)
    page.wait_for_selector("#notice:visible")
    assert response.json()["detail"] in page.inner_text("#notice")
    tab.shoot("too-many-files")


def test_keyboard_alone_chooses_files_and_gets_answers(
    tab: BrowserTab, open_server: str, sample_files: dict[str, Path]
) -> None:
    page = open_page(tab, open_server)
    page.bring_to_front()  # the focused tab: keys go to it, and it may open a file chooser
    for _ in range(20):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "files":
            break
    else:
        pytest.fail("the file chooser cannot be reached with Tab")
    # Space on the focused input opens the chooser. On a loaded machine Chromium has been seen to drop
    # the key (once in a full run): the focus is checked, and the key pressed again, up to three times.
    for _ in range(3):
        assert page.evaluate("document.activeElement.id") == "files"
        try:
            with page.expect_file_chooser(timeout=10_000) as chooser:
                page.keyboard.press("Space")
            break
        except PlaywrightTimeoutError:
            continue
    else:
        pytest.fail("Space on the focused file input never opened a file chooser")
    chooser.value.set_files(sample_files["Dog"])
    page.wait_for_selector("article.result")
    assert labels_by_file(page) == {sample_files["Dog"].name: "Dog"}
    tab.shoot("keyboard")


def test_files_dropped_on_the_page_are_classified(
    tab: BrowserTab, open_server: str, sample_files: dict[str, Path]
) -> None:
    page = open_page(tab, open_server)
    payload = base64.b64encode(sample_files["Cat"].read_bytes()).decode()
    page.evaluate(
        """([name, payload]) => {
            const bytes = Uint8Array.from(atob(payload), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: "image/png" }));
            const zone = document.getElementById("drop");
            zone.dispatchEvent(new DragEvent("dragover", { dataTransfer: transfer, bubbles: true }));
            zone.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true }));
        }""",
        [sample_files["Cat"].name, payload],
    )
    page.wait_for_selector("article.result")
    assert labels_by_file(page) == {sample_files["Cat"].name: "Cat"}


def test_a_running_request_is_visible_and_blocks_a_second_one(
    tab: BrowserTab, open_server: str, sample_files: dict[str, Path]
) -> None:
    page = open_page(tab, open_server)
    held: list[Route] = []
    page.route("**/predict?*", lambda route: held.append(route))  # the request waits until released
    page.set_input_files("#files", [sample_files["Cat"], sample_files["Other"]])
    page.wait_for_selector('main[aria-busy="true"]')
    assert page.inner_text("#status") == "Classifying 2 files…"
    assert page.locator("#files").is_disabled()
    tab.shoot("busy")

    held[0].continue_()
    page.wait_for_selector('main[aria-busy="false"]')
    assert labels_by_file(page) == {sample_files["Cat"].name: "Cat", sample_files["Other"].name: "Other"}
    assert page.locator("#files").is_enabled()


@pytest.fixture
def overloaded_server(classifier: ImageClassifier) -> Iterator[str]:
    """A service that admits one prediction at a time, with that one taken by a client that sent its
    headers and then stalls its body: the next request is refused as overload (503)."""
    settings = Settings(auth_disabled=True, queue_max=1)
    with (
        ready_server(create_app(settings, classifier)) as base_url,
        socket.create_connection(("127.0.0.1", socket_port(base_url))) as stalled,
    ):
        stalled.sendall(
            b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n"
            b"Content-Type: multipart/form-data; boundary=x\r\n\r\n--x\r\n"
        )
        deadline = time.monotonic() + 10
        while httpx.post(f"{base_url}/predict", files={"files": ("a.png", b"x")}).status_code != 503:
            assert time.monotonic() < deadline, "the stalled request never took the only slot"
            time.sleep(0.05)
        yield base_url


def test_overload_is_explained_with_the_apis_detail_and_when_to_retry(
    tab: BrowserTab, overloaded_server: str, sample_files: dict[str, Path]
) -> None:
    refused = httpx.post(f"{overloaded_server}/predict", files={"files": ("a.png", b"x")})
    page = open_page(tab, overloaded_server)
    page.set_input_files("#files", sample_files["Cat"])
    page.wait_for_selector("#notice:visible")
    notice = page.inner_text("#notice")
    assert refused.json()["detail"] in notice
    assert f"Try again in {refused.headers['retry-after']} second" in notice
    tab.shoot("overloaded")


def test_the_page_asks_nothing_of_other_origins_and_breaks_none_of_its_policy(
    tab: BrowserTab, open_server: str, course_pdfs: list[Path], sample_files: dict[str, Path]
) -> None:
    page = open_page(tab, open_server)
    page.set_input_files("#files", [sample_files["Cat"], course_pdfs[0]])
    page.wait_for_selector("article.document")
    page.wait_for_load_state("networkidle")
    outside = [url for url in tab.requests if not url.startswith((open_server, "data:", "blob:"))]
    assert outside == []
    assert {url.removeprefix(open_server) for url in tab.requests if url.startswith(open_server)} >= {
        "/",
        "/static/app.js",
        "/static/auth.js",
        "/static/style.css",
        "/static/vendor/oidc-client-ts.min.js",
        "/version",
        "/predict?thumbnails=true",
    }
    problems = [line for line in tab.console if "Content Security Policy" in line or "pageerror" in line]
    assert problems == []


def test_on_a_phone_the_page_fits_the_screen(
    browser: Browser,
    screenshots: Path,
    open_server: str,
    sample_files: dict[str, Path],
    course_pdfs: list[Path],
) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    context.set_default_timeout(WAIT_MS)
    try:
        page = context.new_page()
        tab = BrowserTab(page, screenshots)
        open_page(tab, open_server)
        page.set_input_files("#files", [sample_files["Cat"], course_pdfs[0]])
        page.wait_for_selector("article.document .tile")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert page.locator("#files").bounding_box()["width"] <= 390  # type: ignore[index]
        tab.shoot("phone")
    finally:
        context.close()
