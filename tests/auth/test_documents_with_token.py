"""A PDF obeys the same token rules as an image: nothing is read before the token is checked."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from tests.auth.conftest import FakeProvider


def test_a_document_needs_a_token_with_the_prediction_scope(
    auth_client: TestClient, provider: FakeProvider, course_pdfs: list[Path]
) -> None:
    files = [("files", (course_pdfs[0].name, course_pdfs[0].read_bytes(), "application/pdf"))]
    missing = auth_client.post("/predict", files=files)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    no_scope = auth_client.post(
        "/predict", files=files, headers={"Authorization": f"Bearer {provider.token(scope='openid')}"}
    )
    assert no_scope.status_code == 403
    allowed = auth_client.post(
        "/predict", files=files, headers={"Authorization": f"Bearer {provider.token()}"}
    )
    assert allowed.status_code == 200, allowed.text
    (answer,) = allowed.json()
    assert answer["pages"] == 5
    assert len(answer["images"]) == 5
