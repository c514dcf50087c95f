"""URL helpers: loopback detection for plain-http exceptions, and credentials kept out of messages."""

from __future__ import annotations

import pytest

from cats_dogs_other.urls import is_loopback_url, redact_credentials


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:8080/", True),
        ("http://127.8.9.10/", True),
        ("http://localhost/realms/x", True),
        ("http://[::1]:9000/", True),
        ("http://example.org/", False),
        ("http://127.0.0.1.example.org/", False),
        ("http://localhost.example.org/", False),
    ],
)
def test_loopback_urls(url: str, loopback: bool) -> None:
    assert is_loopback_url(url) is loopback


def test_credentials_are_redacted_wherever_they_appear() -> None:
    text = "Cannot reach https://alice:s3cr3t@mlflow.example.org/api (and http://token@host:5000/x)"
    redacted = redact_credentials(text)
    assert "s3cr3t" not in redacted
    assert "alice" not in redacted
    assert "token@" not in redacted
    assert "https://***@mlflow.example.org/api" in redacted
    assert "http://***@host:5000/x" in redacted
    assert redact_credentials("models:/cats-dogs-other@champion") == "models:/cats-dogs-other@champion"
