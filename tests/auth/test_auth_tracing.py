"""The token check appears as an `auth` span, without the token in it."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from cats_dogs_other.api import create_app
from cats_dogs_other.inference.classifier import ImageClassifier
from cats_dogs_other.settings import Settings
from tests.api.conftest import wait_until_ready
from tests.api.test_tracing import in_memory_tracer
from tests.auth.conftest import AUDIENCE, FakeProvider


def test_auth_span_for_accepted_and_refused_tokens(
    provider: FakeProvider, classifier: ImageClassifier, sample_files: dict[str, Path]
) -> None:
    tracer, exporter = in_memory_tracer()
    settings = Settings(oauth2_issuer=provider.issuer, oauth2_audience=AUDIENCE)
    image = sample_files["Dog"].read_bytes()
    good, expired = provider.token(), provider.token(exp=1)
    with TestClient(create_app(settings, classifier, tracer=tracer)) as client:
        wait_until_ready(client)
        exporter.clear()
        assert (
            client.post(
                "/upload", files={"file": ("d.png", image)}, headers={"Authorization": f"Bearer {good}"}
            ).status_code
            == 200
        )
        assert (
            client.post(
                "/upload", files={"file": ("d.png", image)}, headers={"Authorization": f"Bearer {expired}"}
            ).status_code
            == 401
        )
    auth_spans = [span for span in exporter.get_finished_spans() if span.name == "auth"]
    assert len(auth_spans) == 2
    assert auth_spans[0].status.is_ok
    assert not auth_spans[1].status.is_ok
    recorded = repr([(s.attributes, [e.attributes for e in s.events]) for s in exporter.get_finished_spans()])
    assert good.split(".")[2] not in recorded
    assert expired.split(".")[2] not in recorded
