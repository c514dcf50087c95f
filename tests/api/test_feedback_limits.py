"""What the feedback store keeps, against a real `serve` process: the daily quota (429), the store's size
cap (507), anonymous feedback off unless allowed, and expired feedback purged in the background."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from cats_dogs_other.feedback import FeedbackStore
from tests.api.conftest import ServeProcess, serve_command
from tests.images import encode

pytestmark = pytest.mark.slow


def photo(n: int) -> bytes:
    return encode(Image.new("RGB", (64, 48), (n % 256, n // 256, 90)), "PNG")


def send(client: httpx.Client, image: bytes, label: str = "Cat") -> httpx.Response:
    return client.post("/feedback", files={"file": ("p.png", image)}, data={"label": label})


def serve(tmp_path: Path, *flags: str) -> tuple[ServeProcess, str]:
    database = f"sqlite:///{tmp_path / 'feedback.db'}"
    command = serve_command("--feedback-database-url", database, *flags)
    return ServeProcess(command, tmp_path / "serve.log").start(), database


def test_past_the_daily_quota_429_and_past_the_size_cap_507(tmp_path: Path) -> None:
    server, database = serve(
        tmp_path,
        "--feedback-allow-anonymous",
        "--feedback-daily-quota",
        "3",
        "--feedback-max-store-bytes",
        "1",
    )
    try:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            # Full from the start (1 byte): a new image is refused, nothing is written.
            full = send(client, photo(0))
            assert full.status_code == 507, full.text
            assert full.headers["content-type"] == "application/problem+json"
            assert "feedback purge" in full.json()["detail"]
            metrics = client.get("/metrics").text
    finally:
        server.stop()
    assert 'cdo_feedback_refusals_total{reason="store_full"} 1.0' in metrics
    store = FeedbackStore(database)
    assert store.counts() == (0, 0)
    store.close()

    server, _ = serve(tmp_path, "--feedback-allow-anonymous", "--feedback-daily-quota", "3")
    try:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            assert [send(client, photo(n)).status_code for n in range(3)] == [201, 201, 201]
            over = send(client, photo(3))
            assert over.status_code == 429, over.text
            assert over.headers["content-type"] == "application/problem+json"
            assert 86_000 < int(over.headers["retry-after"]) <= 86_401
            assert "try again later" in over.json()["detail"]
            assert send(client, photo(0), "Dog").status_code == 201  # changing a label it holds
            metrics = client.get("/metrics").text
    finally:
        server.stop()
    assert 'cdo_feedback_refusals_total{reason="quota"} 1.0' in metrics
    assert "cdo_feedback_store_bytes " in metrics


def test_anonymous_feedback_is_off_unless_the_operator_allows_it(tmp_path: Path) -> None:
    server, database = serve(tmp_path)
    try:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            assert client.get("/version").json()["feedback"]["enabled"] is False  # the page offers none
            refused = send(client, photo(1))
    finally:
        server.stop()
    assert refused.status_code == 403
    assert "FEEDBACK_ALLOW_ANONYMOUS" in refused.json()["detail"]
    store = FeedbackStore(database)
    assert store.counts() == (0, 0)
    store.close()


def test_the_service_purges_expired_feedback_in_the_background(tmp_path: Path) -> None:
    # A retention of 1.7 s (in days) and a purge every half second.
    server, database = serve(
        tmp_path,
        "--feedback-allow-anonymous",
        "--feedback-retention-days",
        str(2 / 86_400),
        "--feedback-purge-interval-seconds",
        "0.5",
    )
    store = FeedbackStore(database)
    try:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            assert send(client, photo(7)).status_code == 201
            assert store.counts() == (1, 1)
            deadline = time.monotonic() + 20
            while store.counts() != (0, 0):
                assert time.monotonic() < deadline, "the expired label was never purged"
                time.sleep(0.2)
            metrics = client.get("/metrics").text
    finally:
        server.stop()
        store.close()
    assert 'cdo_feedback_purged_total{kind="expired_labels"} 1.0' in metrics
    assert 'cdo_feedback_purged_total{kind="images"} 1.0' in metrics
    assert "feedback purged: 1 labels, 1 images" in server.logs()


@pytest.mark.parametrize(("trusted", "refused"), [((), True), (("--trusted-proxies", "127.0.0.1"), False)])
def test_without_auth_the_quota_counts_the_address_and_trusts_only_trusted_proxies(
    tmp_path: Path, trusted: tuple[str, ...], refused: bool
) -> None:
    """Three clients behind one proxy on loopback: one sender, unless the proxy is trusted to name them
    in X-Forwarded-For."""
    server, _ = serve(tmp_path, "--feedback-allow-anonymous", "--feedback-daily-quota", "2", *trusted)
    try:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            statuses = [
                client.post(
                    "/feedback",
                    files={"file": ("p.png", photo(n))},
                    data={"label": "Cat"},
                    headers={"X-Forwarded-For": f"203.0.113.{n}"},
                ).status_code
                for n in range(3)
            ]
    finally:
        server.stop()
    assert statuses == ([201, 201, 429] if refused else [201, 201, 201])
