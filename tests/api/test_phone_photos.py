"""What phones and browsers send, through a real server: a 12-megapixel JPEG, a 2500-pixel PNG screenshot,
AVIF and HEIC, each answered like the small image it was made from."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.api.conftest import ServeProcess, serve_command
from tests.images import encode, heic, phone_photo


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    log = tmp_path_factory.mktemp("phone") / "serve.log"
    process = ServeProcess(serve_command(), log).start()
    yield process
    process.stop()


def _phone_files(image: Image.Image) -> dict[str, bytes]:
    photo = phone_photo(image, (4032, 3024))  # 12.2 megapixels, an iPhone's main camera
    return {
        "12 MP JPEG": encode(photo, "JPEG", quality=92),
        "2500 px PNG": encode(image.resize((2500, 1875), Image.Resampling.BICUBIC), "PNG"),
        "AVIF": encode(image, "AVIF", quality=80),
        "12 MP AVIF": encode(photo, "AVIF", quality=60, speed=10),
        "HEIC": heic(image),
        "12 MP HEIC": heic(photo, quality=60),
    }


@pytest.mark.parametrize("label", ["Cat", "Dog"])
def test_phone_photos_are_classified_like_their_small_versions(
    server: ServeProcess, sample_files: dict[str, Path], label: str
) -> None:
    small = Image.open(sample_files[label]).convert("RGB").resize((400, 300))
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        reference = client.post("/upload", files={"file": ("small.png", encode(small, "PNG"))}).json()
        assert reference["prediction"] == label
        for name, data in _phone_files(small).items():
            if name == "12 MP JPEG":
                assert len(data) > 3_000_000, "a phone's JPEG weighs 3-5 MB"
            answer = client.post("/upload", files={"file": (name, data)})
            assert answer.status_code == 200, f"{name}: {answer.text}"
            body = answer.json()
            assert body["prediction"] == label, name
            assert np.abs(np.array(body["values"]) - np.array(reference["values"])).max() < 0.05, name


def test_heic_and_avif_count_their_pixels_as_sent(
    server: ServeProcess, sample_files: dict[str, Path]
) -> None:
    """The decoded raster is reduced, but the image-size metric reports what the phone sent."""
    image = Image.open(sample_files["Cat"]).convert("RGB")
    with httpx.Client(base_url=server.base_url, timeout=60) as client:

        def pixel_sum() -> float:
            for line in client.get("/metrics").text.splitlines():
                if line.startswith("cdo_image_pixels_sum"):
                    return float(line.split()[-1])
            return 0.0

        for data in (
            heic(phone_photo(image, (4032, 3024)), quality=50),
            encode(image.resize((3000, 2000)), "AVIF", speed=10),
        ):
            before = pixel_sum()
            assert client.post("/upload", files={"file": data}).status_code == 200
            assert pixel_sum() - before in (4032 * 3024, 3000 * 2000)
