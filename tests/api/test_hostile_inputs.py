"""A hostile-input corpus, generated here from a real photo: every case gets its 4xx (or a 200 when the
bytes really are an image), with problem+json, and none a 5xx."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cats_dogs_other.inference.limits import DEFAULT_MAX_PIXELS
from tests.api.conftest import ServeProcess, serve_command
from tests.images import encode, png_declaring
from tests.servers import ProcessMemory


@pytest.fixture(scope="module")
def photo(sample_files: dict[str, Path]) -> Image.Image:
    return Image.open(sample_files["Cat"]).convert("RGB")


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("cat.png", b"not really")
    return buffer.getvalue()


def _tar_gz() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("cat.txt")
        info.size = 4
        archive.addfile(info, io.BytesIO(b"meow"))
    return buffer.getvalue()


NOT_IMAGES: dict[str, Callable[[Image.Image], bytes]] = {
    "zero-bytes": lambda _: b"",
    "one-byte": lambda _: b"\xff",
    "random": lambda _: os.urandom(4096),
    "text": lambda _: b"a cat, honestly\n" * 20,
    "html": lambda _: b"<!doctype html><html><script>alert(1)</script></html>",
    "svg": lambda _: b'<svg xmlns="http://www.w3.org/2000/svg"><circle r="5"/></svg>',
    "json": lambda _: b'{"prediction": "Cat"}',
    "zip": lambda _: _zip(),
    "tar-gz": lambda _: _tar_gz(),
    "gzip": lambda img: gzip.compress(encode(img, "PNG")),
    "pdf": lambda _: b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF",
    "ico": lambda img: encode(img.resize((32, 32)), "ICO"),
    "html-then-png": lambda img: b"<html>" + encode(img, "PNG"),
    "png-magic-only": lambda _: b"\x89PNG\r\n\x1a\n",
    "truncated-png": lambda img: encode(img, "PNG")[:3000],
    "truncated-jpeg": lambda img: encode(img, "JPEG")[:2000],
    "jpeg-header-only": lambda img: encode(img, "JPEG")[:200],
}


@pytest.mark.parametrize("name", sorted(NOT_IMAGES))
def test_not_an_image_is_415(client: TestClient, photo: Image.Image, name: str) -> None:
    data = NOT_IMAGES[name](photo)
    response = client.post("/upload", files={"file": ("cat.jpg", data, "image/jpeg")})  # headers lie
    assert response.status_code == 415, (name, response.text)
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"]


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("1-bit 40000x40000", png_declaring(40_000, 40_000)),
        ("rgba 10000x10000", png_declaring(10_000, 10_000, bit_depth=8, color_type=6)),
        ("gray 9000x8000", png_declaring(9_000, 8_000, bit_depth=8, color_type=0)),
    ],
)
def test_pixel_bombs_are_413_before_decoding(client: TestClient, name: str, data: bytes) -> None:
    response = client.post("/upload", files={"file": ("bomb.png", data)})
    assert response.status_code == 413, name
    assert f"limit is {DEFAULT_MAX_PIXELS:,} pixels" in response.json()["detail"]


IMAGES: dict[str, Callable[[Image.Image], bytes]] = {
    "png-named-txt": lambda img: encode(img, "PNG"),
    "jpeg": lambda img: encode(img, "JPEG", quality=90),
    "webp": lambda img: encode(img, "WEBP"),
    "bmp": lambda img: encode(img, "BMP"),
    "tiff": lambda img: encode(img, "TIFF"),
    "gif": lambda img: encode(img, "GIF"),
    "animated-gif": lambda img: encode(
        img, "GIF", save_all=True, append_images=[img.rotate(90)], duration=50
    ),
    "jpeg+zip polyglot": lambda img: encode(img, "JPEG", quality=90) + _zip(),
    "png+html polyglot": lambda img: encode(img, "PNG") + b"<script>alert(1)</script>",
    "grayscale": lambda img: encode(img.convert("L"), "PNG"),
    "grayscale+alpha": lambda img: encode(img.convert("LA"), "PNG"),
    "palette": lambda img: encode(img.convert("P"), "PNG"),
    "rgba": lambda img: encode(img.convert("RGBA"), "PNG"),
    "cmyk-jpeg": lambda img: encode(img.convert("CMYK"), "JPEG"),
    "cmyk-tiff": lambda img: encode(img.convert("CMYK"), "TIFF"),
    "16-bit": lambda img: encode(
        Image.fromarray(__import__("numpy").asarray(img.convert("L"), dtype="<u2") * 257), "PNG"
    ),
    "1-bit": lambda img: encode(img.convert("1"), "PNG"),
    "32-bit int": lambda img: encode(img.convert("I"), "TIFF"),
    "float": lambda img: encode(img.convert("F"), "TIFF"),
    "tiny 1x1": lambda _: encode(Image.new("RGB", (1, 1), (10, 20, 30)), "PNG"),
    "wide 4000x2": lambda _: encode(Image.new("RGB", (4000, 2), (200, 100, 0)), "PNG"),
}


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_real_images_in_any_form_are_classified(client: TestClient, photo: Image.Image, name: str) -> None:
    response = client.post("/upload", files={"file": ("notes.txt", IMAGES[name](photo), "text/plain")})
    assert response.status_code == 200, (name, response.text)
    body = response.json()
    assert abs(sum(body["values"]) - 1) < 1e-5
    if name not in {"tiny 1x1", "wide 4000x2", "1-bit", "float", "32-bit int"}:
        assert body["prediction"] == "Cat", name


def test_exif_rotated_photo_is_classified_upright(client: TestClient, photo: Image.Image) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated, to be turned 90 degrees clockwise
    rotated = encode(photo.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=exif.tobytes())
    upright = encode(photo, "JPEG", quality=95)
    a = client.post("/upload", files={"file": ("r.jpg", rotated)}).json()
    b = client.post("/upload", files={"file": ("u.jpg", upright)}).json()
    assert a["prediction"] == b["prediction"] == "Cat"
    assert max(abs(x - y) for x, y in zip(a["values"], b["values"], strict=True)) < 0.02


@pytest.mark.slow
def test_a_60_mb_upload_is_refused_without_holding_it(tmp_path: Path, sample_files: dict[str, Path]) -> None:
    command = serve_command()
    server = ServeProcess(command, tmp_path / "serve.log").start()
    assert server.process is not None
    try:
        with httpx.Client(base_url=server.base_url, timeout=60) as client:
            client.post("/upload", files={"file": ("c.png", sample_files["Cat"].read_bytes())})
            memory = ProcessMemory(server.process.pid)
            before = memory.reset_peak()
            declared = client.post(
                "/upload",
                content=b"\0" * (60 << 20),
                headers={"Content-Type": "multipart/form-data; boundary=x"},
            )
            assert declared.status_code == 413

            def sixty_megabytes():  # type: ignore[no-untyped-def]
                yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n'
                for _ in range(60):
                    yield b"\0" * (1 << 20)

            streamed = client.post(
                "/upload",
                content=sixty_megabytes(),
                headers={"Content-Type": "multipart/form-data; boundary=x"},
            )
            assert streamed.status_code == 413
            assert "10,485,760 bytes" in streamed.json()["detail"]
            growth = memory.peak_mib() - before
            assert growth < 30, f"peak memory grew by {growth:.0f} MiB"
            assert client.get("/health").status_code == 200
    finally:
        server.stop()
