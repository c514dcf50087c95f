"""/metrics: checked for content, not just for a 200."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_requests_batches_and_model_calls(
    client: TestClient, sample_files: dict[str, Path]
) -> None:
    before = samples(client.get("/metrics").text)
    for label in ("Cat", "Dog"):
        client.post("/upload", files={"file": ("x.png", sample_files[label].read_bytes())})
    client.post("/upload", files={"file": ("x.png", b"not an image")})
    client.get("/no/such/path/42")
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    after = samples(response.text)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("cdo_http_requests_total", method="POST", route="/upload", status="200") == 2
    assert delta("cdo_http_requests_total", method="POST", route="/upload", status="415") == 1
    assert delta("cdo_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert not any("/no/such/path" in str(key) for key in after)  # no series per unknown path
    assert delta("cdo_http_request_duration_seconds_count", method="POST", route="/upload", status="200") == 2
    assert delta("cdo_inference_batch_size_count") == 2
    assert delta("cdo_inference_batch_size_sum") == 2
    assert delta("cdo_inference_queue_wait_seconds_count") == 2
    assert delta("cdo_model_inference_seconds_count") == 2
    assert value(after, "cdo_inference_queue_depth") == 0
    assert value(after, "cdo_inference_requests_in_progress") == 0
    info = [key for key in after if key[0] == "cdo_model_info"]
    assert len(info) == 1
    assert dict(info[0][1])["name"] == "cats-dogs-other-efficientnet-lite0"
    assert re.fullmatch(r"[0-9a-f]{64}", dict(info[0][1])["sha256"])
