"""Sign-in on the page, against the real node `oidc-provider` and its own login and consent pages:
Authorization Code with PKCE for a public client, the token in memory only, refusals explained."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from playwright.sync_api import Page
from sqlalchemy import select

from cats_dogs_other.api import create_app
from cats_dogs_other.feedback import FeedbackStore
from cats_dogs_other.feedback.schema import labels
from cats_dogs_other.inference.classifier import ImageClassifier
from cats_dogs_other.settings import Settings
from tests.oidc_provider import AUDIENCE, oidc_provider, provider_issuer
from tests.servers import free_port, ready_server
from tests.web.conftest import BrowserTab


@dataclass(frozen=True)
class SignInSetup:
    issuer: str
    page: str  # the service whose page uses the client that may get the API's scope
    page_without_scope: str  # ... the client the API's scope is never granted to
    page_without_client: str  # ... no OAUTH2_CLIENT_ID at all
    feedback_database: str  # the first service keeps feedback here


@pytest.fixture(scope="module")
def sign_in_setup(
    classifier: ImageClassifier, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SignInSetup]:
    port = free_port()
    issuer = provider_issuer(port)
    feedback_database = f"sqlite:///{tmp_path_factory.mktemp('sign-in') / 'feedback.db'}"

    def settings(client_id: str | None) -> Settings:
        return Settings(
            oauth2_issuer=issuer,
            oauth2_audience=AUDIENCE,
            oauth2_client_id=client_id,
            oauth2_audience_parameter="resource",  # what node-oidc-provider understands (RFC 8707)
            feedback_database_url=feedback_database if client_id == "web-page" else None,  # type: ignore[arg-type]
        )

    with ExitStack() as stack:
        page, no_scope, no_client = (
            stack.enter_context(ready_server(create_app(settings(client_id), classifier)))
            for client_id in ("web-page", "web-page-no-scope", None)
        )
        stack.enter_context(oidc_provider(port, page_urls=(f"{page}/", f"{no_scope}/")))
        yield SignInSetup(issuer, page, no_scope, no_client, feedback_database)


def sign_in(tab: BrowserTab, base_url: str, issuer: str, user: str = "alice") -> Page:
    """From the page to the provider's login and consent pages and back, as a person would. The scopes
    the page asked the provider for are kept in `tab.asked_scopes`."""
    page = tab.page
    page.goto(f"{base_url}/")
    page.wait_for_selector("#sign-in:visible")
    with page.expect_request(lambda request: request.url.startswith(f"{issuer}/auth?")) as authorize:
        page.click("#sign-in")
    tab.asked_scopes = parse_qs(urlsplit(authorize.value.url).query)["scope"][0].split()
    page.wait_for_url(f"{issuer}/interaction/**")
    page.fill("input[name=login]", user)
    page.fill("input[name=password]", "any password")
    page.click("button[type=submit]")
    page.wait_for_selector("text=Authorize")  # the consent page
    tab.shoot("provider-consent")
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}/")
    page.wait_for_selector("#sign-out:visible")
    return page


def bearer_of_next_prediction(page: Page, files: list[Path]) -> str:
    with page.expect_request("**/predict?*") as request:
        page.set_input_files("#files", files)
    authorization = request.value.headers.get("authorization", "")
    assert authorization.startswith("Bearer ")
    return authorization.removeprefix("Bearer ")


def predict_with(base_url: str, token: str, image: Path) -> httpx.Response:
    """The API's answer to the page's token, asked directly."""
    return httpx.post(
        f"{base_url}/predict",
        headers={"Authorization": f"Bearer {token}"},
        files={"files": (image.name, image.read_bytes())},
        timeout=60,
    )


def test_a_person_signs_in_at_the_provider_and_gets_the_answer(
    tab: BrowserTab, sign_in_setup: SignInSetup, sample_files: dict[str, Path]
) -> None:
    tab.page.goto(f"{sign_in_setup.page}/")
    tab.page.wait_for_selector("#sign-in:visible")
    assert tab.page.locator("#files").is_disabled()
    assert tab.page.inner_text("#notice") == "Sign in to classify images."
    assert "info" in (tab.page.get_attribute("#notice", "class") or "")  # guidance, not an error
    tab.shoot("signed-out")

    page = sign_in(tab, sign_in_setup.page, sign_in_setup.issuer)
    assert page.url == f"{sign_in_setup.page}/"  # the code and state are gone from the address bar
    # The provider offers `profile` and `email`: the page asked for them and greets the person by name.
    assert {"openid", "profile", "email", "get::prediction"} <= set(tab.asked_scopes)
    assert page.inner_text("#who") == "Signed in as Alice Example"

    token = bearer_of_next_prediction(page, [sample_files["Cat"]])
    page.wait_for_selector("article.result")
    assert page.locator("article.result .label").inner_text() == "Cat"
    tab.shoot("signed-in")

    # The token is the provider's, for this API, and nowhere a script or a later visit could read it.
    claims = jwt.decode(token, options={"verify_signature": False})  # the service verified it already
    assert claims["iss"] == sign_in_setup.issuer
    assert claims["aud"] == AUDIENCE
    assert "get::prediction" in claims["scope"].split()
    assert predict_with(sign_in_setup.page, token, sample_files["Cat"]).status_code == 200
    stored = page.evaluate("JSON.stringify([{...localStorage}, {...sessionStorage}, document.cookie])")
    assert token not in stored
    assert all(token not in cookie["value"] for cookie in page.context.cookies())


def test_a_signed_in_person_corrects_an_answer_under_their_own_name(
    tab: BrowserTab, sign_in_setup: SignInSetup, sample_files: dict[str, Path]
) -> None:
    page = sign_in(tab, sign_in_setup.page, sign_in_setup.issuer, user="carol")
    token = bearer_of_next_prediction(page, [sample_files["Dog"]])
    assert "post::feedback" in jwt.decode(token, options={"verify_signature": False})["scope"].split()
    card = page.locator("article.result")
    card.wait_for()
    with page.expect_request("**/feedback") as sent:
        card.get_by_role("button", name="Wrong…").click()
        card.locator(".choices").get_by_role("button", name="Other").click()
    assert sent.value.headers.get("authorization") == f"Bearer {token}"
    card.locator('.feedback[data-sent="Other"]').wait_for()
    tab.shoot("signed-in-feedback")

    store = FeedbackStore(sign_in_setup.feedback_database)
    with store.engine.connect() as connection:
        rows = connection.execute(select(labels.c.subject, labels.c.label)).all()
    store.close()
    assert [tuple(row) for row in rows] == [("carol", "Other")]


def test_a_token_without_the_scope_is_explained_as_access_denied(
    tab: BrowserTab, sign_in_setup: SignInSetup, sample_files: dict[str, Path]
) -> None:
    page = sign_in(tab, sign_in_setup.page_without_scope, sign_in_setup.issuer, user="bob")
    token = bearer_of_next_prediction(page, [sample_files["Cat"]])
    page.wait_for_selector("#notice:visible")
    refused = predict_with(sign_in_setup.page_without_scope, token, sample_files["Cat"])
    assert refused.status_code == 403
    notice = page.inner_text("#notice")
    assert notice.startswith(f"Access denied: {refused.json()['detail']}")
    assert "get::prediction" in notice
    assert page.locator("article.result").count() == 0
    tab.shoot("access-denied")


def test_sign_out_ends_the_session_here_and_at_the_provider(
    tab: BrowserTab, sign_in_setup: SignInSetup
) -> None:
    page = sign_in(tab, sign_in_setup.page, sign_in_setup.issuer)
    page.click("#sign-out")
    page.wait_for_url(f"{sign_in_setup.issuer}/session/end**")
    page.click("text=Yes, sign me out")
    page.wait_for_url(f"{sign_in_setup.page}/")
    page.wait_for_selector("#sign-in:visible")
    assert page.inner_text("#who") == "Not signed in"
    assert page.locator("#files").is_disabled()
    tab.shoot("signed-out-again")

    # The provider forgot the person too: signing in again asks for the login again.
    page.click("#sign-in")
    page.wait_for_url(f"{sign_in_setup.issuer}/interaction/**")
    assert page.locator("input[name=login]").is_visible()


def test_a_refused_token_leads_back_to_sign_in(
    tab: BrowserTab, sign_in_setup: SignInSetup, sample_files: dict[str, Path]
) -> None:
    page = sign_in(tab, sign_in_setup.page, sign_in_setup.issuer)
    # The service refuses the token it gets (as it would a revoked or rotated one): a real 401.
    page.route(
        "**/predict?*",
        lambda route: route.continue_(headers={**route.request.headers, "authorization": "Bearer not.a.jwt"}),
    )
    page.set_input_files("#files", sample_files["Cat"])
    page.wait_for_selector("#sign-in:visible")
    assert page.inner_text("#notice").startswith("The service did not accept your sign-in:")
    assert page.inner_text("#who") == "Not signed in"
    assert page.locator("#files").is_disabled()


def test_an_expired_token_leads_back_to_sign_in(tab: BrowserTab, sign_in_setup: SignInSetup) -> None:
    tab.page.clock.install()  # the page's clock, so that the token's five minutes pass at once
    page = sign_in(tab, sign_in_setup.page, sign_in_setup.issuer)
    page.clock.fast_forward("05:10")
    page.wait_for_selector("#sign-in:visible")
    assert page.inner_text("#notice") == "Your sign-in has expired: sign in again."
    assert page.locator("#files").is_disabled()
    tab.shoot("expired")


def test_without_a_client_id_the_page_says_sign_in_is_not_configured(
    tab: BrowserTab, sign_in_setup: SignInSetup
) -> None:
    page = tab.page
    page.goto(f"{sign_in_setup.page_without_client}/")
    page.wait_for_selector("#notice:visible")
    notice = page.inner_text("#notice")
    assert notice.startswith("Sign-in is not configured")
    assert "OAUTH2_CLIENT_ID" in notice
    assert sign_in_setup.issuer in notice
    assert page.locator("#sign-in").is_hidden()
    assert page.locator("#files").is_disabled()
    tab.shoot("sign-in-not-configured")


def test_a_person_reads_what_is_kept_and_deletes_everything_they_sent(
    tab: BrowserTab, sign_in_setup: SignInSetup, sample_files: dict[str, Path]
) -> None:
    page = sign_in(tab, sign_in_setup.page, sign_in_setup.issuer, user="dave")
    kept = page.locator("#kept")
    assert kept.is_visible()  # before anything is sent
    statement = kept.inner_text()
    assert "at most 512 pixels" in statement
    assert "without its metadata" in statement
    assert "for 180 days" in statement
    assert "account's id" in statement
    assert "delete everything you sent" in statement
    page.set_input_files("#files", [sample_files["Dog"], sample_files["Cat"]])
    page.wait_for_selector("article.result >> nth=1")
    for card in page.locator("article.result").all():
        card.get_by_role("button", name="Right").click()
        card.locator(".feedback[data-sent]").wait_for()
    tab.shoot("kept-desktop")
    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    kept.scroll_into_view_if_needed()
    assert kept.is_visible()
    tab.shoot("kept-phone")
    page.set_viewport_size({"width": 1100, "height": 900})

    # Dave's images that nobody else labelled go with his labels (carol may have labelled the dog).
    store = FeedbackStore(sign_in_setup.feedback_database)
    votes = {entry.sha256: len(entry.labels) for entry in store.labelled_images()}
    store.close()
    only_his = sum(
        votes[hashlib.sha256(sample_files[label].read_bytes()).hexdigest()] == 1 for label in ("Dog", "Cat")
    )

    page.get_by_role("button", name="Delete everything I sent…").click()
    page.get_by_role("button", name="Cancel").click()  # changing one's mind deletes nothing
    assert page.locator("#erase-status").inner_text() == ""
    with page.expect_response(lambda response: response.request.method == "DELETE") as erased:
        page.get_by_role("button", name="Delete everything I sent…").click()
        page.get_by_role("button", name="Delete", exact=True).click()
    assert erased.value.status == 200
    page.wait_for_selector("#erase-status:has-text('Deleted')")
    assert page.inner_text("#erase-status") == f"Deleted: 2 of your labels and {only_his} images."
    assert page.locator(".feedback[data-sent]").count() == 0
    tab.shoot("kept-erased")

    store = FeedbackStore(sign_in_setup.feedback_database)
    with store.engine.connect() as connection:
        subjects = connection.execute(select(labels.c.subject)).scalars().all()
    store.close()
    assert "dave" not in subjects
