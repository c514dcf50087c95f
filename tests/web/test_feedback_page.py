"""Feedback on the page, in a real Chromium against a real server and a real SQLite file: "Right" or
"Wrong → the right label" under each answer, stored as POST /feedback stores it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page

from cats_dogs_other.api import create_app
from cats_dogs_other.feedback import FeedbackStore
from cats_dogs_other.inference.classifier import ImageClassifier
from cats_dogs_other.inference.documents import read_document
from cats_dogs_other.settings import Settings
from tests.servers import ready_server
from tests.web.conftest import BrowserTab
from tests.web.test_page import open_page


@pytest.fixture
def feedback_server(classifier: ImageClassifier, tmp_path: Path) -> Iterator[tuple[str, FeedbackStore]]:
    url = f"sqlite:///{tmp_path / 'feedback.db'}"
    settings = Settings(auth_disabled=True, feedback_allow_anonymous=True, feedback_database_url=url)
    store = FeedbackStore(url)
    with ready_server(create_app(settings, classifier)) as base_url:
        yield base_url, store
    store.close()


def stored_labels(store: FeedbackStore) -> dict[str, list[str]]:
    return {entry.sha256: entry.labels for entry in store.labelled_images()}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_people_confirm_or_correct_each_answer_and_it_is_stored(
    tab: BrowserTab, feedback_server: tuple[str, FeedbackStore], sample_files: dict[str, Path]
) -> None:
    base_url, store = feedback_server
    page = open_page(tab, base_url)
    page.set_input_files("#files", [sample_files["Cat"], sample_files["Dog"]])
    page.wait_for_selector("article.result >> nth=1")
    cat = page.locator(f'article.result[data-file="{sample_files["Cat"].name}"]')
    dog = page.locator(f'article.result[data-file="{sample_files["Dog"].name}"]')
    assert cat.locator(".feedback .choices").is_hidden()

    cat.get_by_role("button", name="Wrong…").click()
    assert cat.get_by_role("button", name="Wrong…").get_attribute("aria-expanded") == "true"
    assert cat.locator(".choices button").all_inner_texts() == ["Dog", "Other"]  # not the answer itself
    cat.locator(".choices").get_by_role("button", name="Other").click()
    page.wait_for_selector(
        f'article.result[data-file="{sample_files["Cat"].name}"] .feedback[data-sent="Other"]'
    )
    assert cat.locator(".feedback-status").inner_text() == "Thanks: saved as Other."
    assert cat.locator('.choices button[aria-pressed="true"]').inner_text() == "Other"

    dog.get_by_role("button", name="Right").focus()
    page.keyboard.press("Enter")  # the keyboard alone
    page.wait_for_selector(
        f'article.result[data-file="{sample_files["Dog"].name}"] .feedback[data-sent="Dog"]'
    )
    assert dog.locator(".feedback-status").inner_text() == "Thanks: confirmed."
    tab.shoot("feedback")
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
    tab.shoot("feedback-phone")

    assert stored_labels(store) == {
        sha256_of(sample_files["Cat"]): ["Other"],
        sha256_of(sample_files["Dog"]): ["Dog"],
    }
    assert not [line for line in tab.console if line.startswith(("error", "pageerror"))]


def test_an_image_of_a_pdf_is_confirmed_on_its_tile(
    tab: BrowserTab, feedback_server: tuple[str, FeedbackStore], course_pdfs: list[Path]
) -> None:
    base_url, store = feedback_server
    pdf = course_pdfs[0]
    document = read_document(pdf.read_bytes(), Settings().document_limits())
    page = open_page(tab, base_url)
    page.set_input_files("#files", pdf)
    tile = page.locator("article.document .tile.result").nth(1)
    tile.wait_for()
    where = (int(tile.get_attribute("data-page") or -1), int(tile.get_attribute("data-index") or -1))
    tile.get_by_role("button", name="Right").click()
    page.wait_for_selector("article.document .tile.result >> nth=1 >> .feedback[data-sent]")

    (image,) = [i for i in document.images if (i.position.page, i.position.index) == where]
    assert image.data is not None
    content = image.data if isinstance(image.data, bytes) else image.data.encoded
    assert stored_labels(store) == {hashlib.sha256(content).hexdigest(): [tile.get_attribute("data-label")]}


def test_a_refusal_is_shown_under_the_answer(
    tab: BrowserTab, classifier: ImageClassifier, tmp_path: Path, sample_files: dict[str, Path]
) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("the database's folder cannot be made here: the database is unavailable")
    url = f"sqlite:///{blocked / 'feedback.db'}"
    settings = Settings(auth_disabled=True, feedback_allow_anonymous=True, feedback_database_url=url)
    with ready_server(create_app(settings, classifier)) as base_url:
        page: Page = open_page(tab, base_url)
        page.set_input_files("#files", sample_files["Other"])
        card = page.locator("article.result")
        card.wait_for()
        card.get_by_role("button", name="Right").click()
        status = card.locator(".feedback-status.error")
        status.wait_for()
        assert status.inner_text().startswith("Not saved: The feedback database cannot be reached")
        assert "Try again in 30 seconds." in status.inner_text()
        assert card.get_by_role("button", name="Right").is_enabled()  # to try again
        tab.shoot("feedback-error")


def test_without_a_feedback_database_there_are_no_feedback_buttons(
    tab: BrowserTab, open_server: str, sample_files: dict[str, Path]
) -> None:
    page = open_page(tab, open_server)
    page.set_input_files("#files", sample_files["Cat"])
    page.wait_for_selector("article.result")
    assert page.locator(".feedback").count() == 0
    assert page.locator("#kept").is_hidden()  # nothing is kept, so nothing to say about it


def test_anonymous_feedback_is_said_to_be_anonymous_and_the_operators_to_delete(
    tab: BrowserTab, feedback_server: tuple[str, FeedbackStore]
) -> None:
    base_url, _ = feedback_server
    page = open_page(tab, base_url)
    kept = page.locator("#kept")
    kept.wait_for()
    statement = kept.inner_text()
    assert "without its metadata" in statement
    assert "anonymously" in statement
    assert "a hash of your network address is kept" in statement  # the quota's sender, said plainly
    assert "for 180 days" in statement
    assert "only the operator of this service can delete it" in statement
    assert page.locator("#erase").is_hidden()  # nobody to erase for


def test_with_anonymous_feedback_off_the_page_offers_none(
    tab: BrowserTab, classifier: ImageClassifier, tmp_path: Path, sample_files: dict[str, Path]
) -> None:
    settings = Settings(auth_disabled=True, feedback_database_url=f"sqlite:///{tmp_path / 'feedback.db'}")
    with ready_server(create_app(settings, classifier)) as base_url:
        page = open_page(tab, base_url)
        page.set_input_files("#files", sample_files["Cat"])
        page.wait_for_selector("article.result")
        assert page.locator(".feedback").count() == 0
        assert page.locator("#kept").is_hidden()
