"""/metrics: checked for content, not just for a 200."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from tests.api.test_metrics import samples, value
from tests.auth.conftest import FakeProvider


def test_metrics_count_auth_failures_by_reason(
    provider: FakeProvider, auth_client: TestClient, sample_files: dict[str, Path]
) -> None:
    image = sample_files["Cat"].read_bytes()
    auth_client.post("/upload", files={"file": ("x.png", image)})
    auth_client.post(
        "/upload",
        files={"file": ("x.png", image)},
        headers={"Authorization": f"Bearer {provider.token(exp=1)}"},
    )
    auth_client.post(
        "/upload",
        files={"file": ("x.png", image)},
        headers={"Authorization": f"Bearer {provider.token(scope='other')}"},
    )
    found = samples(auth_client.get("/metrics").text)
    assert value(found, "cdo_auth_failures_total", reason="missing") == 1
    assert value(found, "cdo_auth_failures_total", reason="expired") == 1
    assert value(found, "cdo_auth_failures_total", reason="insufficient_scope") == 1
