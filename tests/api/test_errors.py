"""Every client mistake gets its 4xx with an RFC 9457 problem+json body; nothing becomes a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cats_dogs_other.api import create_app
from cats_dogs_other.inference.classifier import ImageClassifier
from cats_dogs_other.inference.limits import DEFAULT_MAX_PIXELS
from cats_dogs_other.settings import Settings
from tests.images import encode, png_declaring


def assert_problem(response: httpx.Response, status: int, detail_part: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = response.json()
    assert body["status"] == status
    assert body["title"]
    assert detail_part in str(body["detail"])
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def test_missing_part_is_422(client: TestClient) -> None:
    response = client.post("/upload", files={"image": ("cat.png", b"...", "image/png")})
    assert_problem(response, 422, "Missing form part 'file' (parts sent: 'image')")


def test_text_field_instead_of_a_file_is_422(client: TestClient) -> None:
    response = client.post("/upload", data={"file": "cat.png"}, files={"other": ("x", b"x")})
    assert_problem(response, 422, "text field")


def test_two_files_on_upload_is_400(client: TestClient) -> None:
    parts = [("file", ("a.png", b"a")), ("file", ("b.png", b"b"))]
    assert_problem(client.post("/upload", files=parts), 400, "POST /predict takes several")


def test_predict_without_files_is_422(client: TestClient) -> None:
    response = client.post("/predict", files={"file": ("cat.png", b"...", "image/png")})
    assert_problem(response, 422, "Missing form part 'files'")


def test_not_multipart_is_415(client: TestClient) -> None:
    assert_problem(client.post("/upload", json={"file": "x"}), 415, "Expected multipart/form-data")
    assert_problem(client.post("/upload", data={"file": "x"}), 415, "application/x-www-form-urlencoded")
    assert_problem(client.post("/upload", content=b"raw"), 415, "no Content-Type")


def test_malformed_multipart_is_400(client: TestClient) -> None:
    response = client.post(
        "/upload", content=b"--abc\r\nnonsense", headers={"Content-Type": "multipart/form-data"}
    )
    assert_problem(response, 400, "boundary")


def test_too_many_files_is_400(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(max_files_per_request=2)
    parts = [("files", (f"{i}.png", b"x", "image/png")) for i in range(3)]
    assert_problem(client.post("/predict", files=parts), 400, "Too many files")


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty"),
        (b"plain text", "unsupported"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "unsupported"),
    ],
)
def test_not_an_image_is_415(client: TestClient, data: bytes, code: str) -> None:
    body = assert_problem(client.post("/upload", files={"file": ("x.png", data, "image/png")}), 415, "")
    assert body["code"] == code


def test_truncated_image_is_415(client: TestClient, sample_files: dict[str, Path]) -> None:
    data = encode(Image.open(sample_files["Cat"]), "JPEG")
    response = client.post("/upload", files={"file": ("cat.jpg", data[: len(data) // 2], "image/jpeg")})
    assert_problem(response, 415, "corrupt or truncated")


def test_too_many_pixels_is_413_naming_the_limit(client: TestClient) -> None:
    response = client.post("/upload", files={"file": ("bomb.png", png_declaring(40_000, 40_000))})
    body = assert_problem(response, 413, f"the limit is {DEFAULT_MAX_PIXELS:,} pixels")
    assert body["code"] == "too_many_pixels"


def test_pixel_limit_is_configurable(make_client, sample_files: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    client = make_client(max_pixels=10_000)
    response = client.post("/upload", files={"file": ("cat.png", sample_files["Cat"].read_bytes())})
    assert_problem(response, 413, "the limit is 10,000 pixels")


def test_declared_oversized_body_is_413(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(max_upload_bytes=1000)
    response = client.post("/upload", files={"file": ("big.png", b"x" * 2000, "image/png")})
    assert_problem(response, 413, "larger than the limit of 1,000 bytes")


def test_streamed_oversized_body_is_cut_off_with_413(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(max_upload_bytes=100_000)
    sent = 0

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server must count as it reads
        nonlocal sent
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'
        for _ in range(50):
            sent += 10_000
            yield b"x" * 10_000

    response = client.post(
        "/upload", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert_problem(response, 413, "larger than the limit of 100,000 bytes")


def test_not_ready_is_503_with_retry_after(classifier: ImageClassifier) -> None:
    # Without entering the lifespan the model is never warmed up, so the app is not ready.
    client = TestClient(create_app(Settings(auth_disabled=True), classifier))
    assert_problem(client.get("/ready"), 503, "loading its model")
    response = client.post("/upload", files={"file": ("x.png", b"x")})
    body = assert_problem(response, 503, "retry")
    assert response.headers["retry-after"] == "5"
    assert body["instance"] == "/upload"


def test_unknown_route_and_method_are_problems(client: TestClient) -> None:
    assert_problem(client.get("/nope"), 404, "Not Found")
    wrong_method = client.get("/upload")
    assert_problem(wrong_method, 405, "Method Not Allowed")
    assert wrong_method.headers["allow"] == "POST"


def test_a_405_names_every_method_of_the_path_even_across_routes(make_client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """/feedback is two routes (POST to send, DELETE to erase): Allow lists both (RFC 9110)."""
    client = make_client(feedback_database_url=f"sqlite:///{tmp_path / 'feedback.db'}")
    response = client.put("/feedback")
    assert_problem(response, 405, "Method Not Allowed")
    assert response.headers["allow"] == "POST, DELETE"


def test_a_failure_inside_inference_is_a_500_without_internals(
    make_client, sample_files: dict[str, Path], classifier: ImageClassifier, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    client = make_client()

    def broken_run(batch: object) -> object:
        raise RuntimeError("secret internal state /opt/model")

    monkeypatch.setattr(classifier, "run", broken_run)
    response = client.post("/upload", files={"file": ("cat.png", sample_files["Cat"].read_bytes())})
    body = assert_problem(response, 500, "logged under its request id")
    assert "secret" not in response.text
    monkeypatch.undo()
    assert (
        client.post("/upload", files={"file": ("cat.png", sample_files["Cat"].read_bytes())}).status_code
        == 200
    )
    assert body["instance"] == "/upload"
