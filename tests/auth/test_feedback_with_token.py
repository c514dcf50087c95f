"""Feedback needs its own scope (FEEDBACK_REQUIRED_SCOPE), and keeps the token's `sub` and nothing else."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from cats_dogs_other.feedback import FeedbackStore
from cats_dogs_other.feedback.schema import labels
from tests.auth.conftest import FakeProvider
from tests.images import encode

FEEDBACK = "post::feedback"


def photo(red: int = 120) -> bytes:
    from PIL import Image

    return encode(Image.new("RGB", (50, 40), (red, 80, 40)), "PNG")


def send(client: TestClient, token: str | None, label: str = "Cat", image: bytes | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post(
        "/feedback", files={"file": ("p.png", image or photo())}, data={"label": label}, headers=headers
    )


def test_feedback_needs_the_feedback_scope_and_stores_only_the_subject(
    make_auth_client: Callable[..., TestClient], provider: FakeProvider, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'feedback.db'}"
    client = make_auth_client(feedback_database_url=url)
    feedback = client.get("/version").json()["feedback"]
    assert (feedback["enabled"], feedback["required_scope"]) == (True, FEEDBACK)

    missing = client.post("/feedback", files={"file": ("p.png", photo())}, data={"label": "Cat"})
    assert missing.status_code == 401
    predict_only = send(client, provider.token())
    assert predict_only.status_code == 403
    assert predict_only.headers["content-type"] == "application/problem+json"
    assert f'scope="{FEEDBACK}"' in predict_only.headers["www-authenticate"]
    assert "lacks the scope post::feedback" in predict_only.json()["detail"]
    no_subject = send(client, provider.token(scope=FEEDBACK, sub=None))
    assert no_subject.status_code == 403

    alice = provider.token(scope=f"openid {FEEDBACK}", sub="alice", email="alice@example.com", name="Alice")
    first = send(client, alice, "Cat")
    assert first.status_code == 201, first.text
    again = send(client, alice, "Dog")
    assert again.json()["replaced"] is True
    assert again.json()["id"] == first.json()["id"]
    assert send(client, provider.token(scope=FEEDBACK, sub="bob"), "Dog").status_code == 201
    # The scopes are separate: a feedback token cannot predict.
    upload = client.post(
        "/upload", files={"file": ("p.png", photo())}, headers={"Authorization": f"Bearer {alice}"}
    )
    assert upload.status_code == 403

    store = FeedbackStore(url)
    with store.engine.connect() as connection:
        rows = connection.execute(select(labels)).mappings().all()
    store.close()
    assert sorted((row["subject"], row["label"]) for row in rows) == [("alice", "Dog"), ("bob", "Dog")]
    # The sender (what the daily quota counts) is a hash of the subject, not another copy of a claim.
    senders = {row["subject"]: row["sender"] for row in rows}
    assert senders["alice"] == hashlib.sha256(b"sub:alice").hexdigest()
    stored_text = " ".join(str(value) for row in rows for value in row.values())
    assert "alice@example.com" not in stored_text
    assert "Alice" not in stored_text


def test_a_custom_feedback_scope(
    make_auth_client: Callable[..., TestClient], provider: FakeProvider, tmp_path: Path
) -> None:
    client = make_auth_client(
        feedback_database_url=f"sqlite:///{tmp_path / 'f.db'}", feedback_required_scope="write:labels"
    )
    assert send(client, provider.token(scope=FEEDBACK)).status_code == 403
    assert send(client, provider.token(scope="write:labels")).status_code == 201


def test_feedback_off_is_404_before_any_token_is_asked_for(
    make_auth_client: Callable[..., TestClient],
) -> None:
    response = send(make_auth_client(), None)
    assert response.status_code == 404


def test_a_person_withdraws_what_they_sent_and_only_that(
    make_auth_client: Callable[..., TestClient], provider: FakeProvider, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'feedback.db'}"
    client = make_auth_client(feedback_database_url=url)
    alice, bob = (provider.token(scope=FEEDBACK, sub=name) for name in ("alice", "bob"))
    sha256 = send(client, alice, "Cat").json()["sha256"]
    send(client, bob, "Dog")

    def withdraw(token: str | None, target: str = sha256) -> int:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return client.delete(f"/feedback/{target}", headers=headers).status_code

    assert withdraw(None) == 401
    assert withdraw(provider.token()) == 403  # the prediction scope is not enough
    assert withdraw(alice, "not-a-hash") == 422
    assert withdraw(alice) == 204
    assert withdraw(alice) == 404  # already withdrawn
    store = FeedbackStore(url)
    assert store.counts() == (1, 1)  # bob's label and the image stay
    assert withdraw(bob) == 204
    assert store.counts() == (0, 0)  # the image went with the last label
    store.close()


def test_a_person_erases_everything_they_sent_and_only_that(
    make_auth_client: Callable[..., TestClient], provider: FakeProvider, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'feedback.db'}"
    client = make_auth_client(feedback_database_url=url)
    alice, bob = (provider.token(scope=FEEDBACK, sub=name) for name in ("alice", "bob"))
    shared, hers, his = photo(10), photo(20), photo(30)
    for token, image in ((alice, shared), (alice, hers), (bob, shared), (bob, his)):
        assert send(client, token, "Cat", image).status_code == 201

    def erase(token: str | None) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return client.delete("/feedback", headers=headers)

    assert erase(None).status_code == 401
    assert erase(provider.token()).status_code == 403  # the prediction scope is not enough
    erased = erase(alice)
    assert erased.status_code == 200, erased.text
    assert erased.json() == {"labels": 2, "images": 1}  # her own image; the shared one stays for bob
    store = FeedbackStore(url)
    assert {entry.sha256: entry.labels for entry in store.labelled_images()} == {
        hashlib.sha256(shared).hexdigest(): ["Cat"],
        hashlib.sha256(his).hexdigest(): ["Cat"],
    }
    assert erase(alice).json() == {"labels": 0, "images": 0}
    store.close()
    assert 'cdo_feedback_purged_total{kind="erased_labels"} 2.0' in client.get("/metrics").text
