"""`POST /predict?thumbnails=true`: each answered image carries what the model saw, small, as a data URL."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from fastapi.testclient import TestClient
from PIL import Image

from tests.images import encode
from tests.pdfs import flate_image, hand_pdf, jpeg_image

PREFIX = "data:image/jpeg;base64,"


def thumbnail_of(entry: dict[str, object]) -> Image.Image:
    url = entry["thumbnail"]
    assert isinstance(url, str)
    assert url.startswith(PREFIX)
    image = Image.open(io.BytesIO(base64.b64decode(url.removeprefix(PREFIX))))
    assert image.format == "JPEG"
    return image


def test_photos_and_document_images_get_thumbnails_of_at_most_128_pixels(
    client: TestClient, sample_files: dict[str, Path]
) -> None:
    wide = Image.new("RGB", (900, 300), (200, 40, 40))
    document = hand_pdf(
        [[jpeg_image(wide)], [flate_image(Image.new("L", (60, 240), 90))], [jpeg_image(wide)]]
    )
    response = client.post(
        "/predict?thumbnails=true",
        files=[
            ("files", ("cat.png", sample_files["Cat"].read_bytes())),
            ("files", ("doc.pdf", document)),
            ("files", ("notes.txt", b"not an image")),
        ],
    )
    assert response.status_code == 200, response.text
    photo, pdf, refused = response.json()

    with Image.open(sample_files["Cat"]) as original:
        ratio = original.width / original.height
    small = thumbnail_of(photo)
    assert max(small.size) == 128
    assert abs(small.width / small.height - ratio) < 0.05
    first, grey, repeat = pdf["images"]
    assert thumbnail_of(first).size == (128, 43)
    assert thumbnail_of(grey).size == (32, 128)
    assert thumbnail_of(grey).getpixel((16, 64)) in {(90, 90, 90), (89, 89, 89), (91, 91, 91)}
    assert repeat["duplicate_of"] == {"page": 0, "index": 0}
    assert repeat["thumbnail"] == first["thumbnail"]
    assert "thumbnail" not in refused


def test_a_thumbnail_is_upright_as_the_model_sees_it(client: TestClient) -> None:
    # Stored 200x100 with EXIF orientation 6 (rotate 90°): shown and classified as 100x200.
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(Image.new("RGB", (200, 100), (10, 120, 200)), "JPEG", exif=exif.tobytes())
    response = client.post("/predict?thumbnails=true", files={"files": ("phone.jpg", data)})
    (answer,) = response.json()
    assert thumbnail_of(answer).size == (64, 128)


def test_without_the_query_there_is_no_thumbnail_and_a_bad_value_is_a_problem(
    client: TestClient, sample_files: dict[str, Path]
) -> None:
    data = sample_files["Dog"].read_bytes()
    (plain,) = client.post("/predict", files={"files": ("dog.png", data)}).json()
    assert "thumbnail" not in plain
    assert set(client.post("/upload", files={"file": ("dog.png", data)}).json()) == {"prediction", "values"}
    bad = client.post("/predict?thumbnails=perhaps", files={"files": ("dog.png", data)})
    assert bad.status_code == 422
    assert bad.headers["content-type"] == "application/problem+json"
    assert "thumbnails" in bad.json()["detail"]
