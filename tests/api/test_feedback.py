"""`POST /feedback` on a real server (Uvicorn on loopback) with a real database: what it stores, the
errors it shares with /predict, and how it behaves when its database is down."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import httpx
import pytest
from PIL import Image

from cats_dogs_other.api import create_app
from cats_dogs_other.feedback import FeedbackStore, export_dataset
from cats_dogs_other.inference.classifier import ImageClassifier
from cats_dogs_other.inference.documents import read_document
from cats_dogs_other.inference.limits import DocumentLimits
from cats_dogs_other.settings import Settings
from tests.images import encode
from tests.pdfs import flate_image, hand_pdf, jpeg_image
from tests.postgres import PostgresServer
from tests.servers import ready_server

Serve = Callable[..., AbstractContextManager[str]]


@pytest.fixture
def serve(classifier: ImageClassifier) -> Serve:
    """A ready server (auth off and anonymous feedback allowed, unless overridden) with the given settings."""

    @contextmanager
    def start(**settings: object) -> Iterator[str]:
        given = {"auth_disabled": True, "feedback_allow_anonymous": True, **settings}
        app = create_app(Settings(**given), classifier)  # type: ignore[arg-type]
        with ready_server(app) as base_url:
            yield base_url

    return start


def send(base_url: str, data: bytes, label: str, name: str = "photo.png", **fields: str) -> httpx.Response:
    return httpx.post(
        f"{base_url}/feedback", files={"file": (name, data)}, data={"label": label, **fields}, timeout=30
    )


def stored_image(url: str, sha256: str) -> Image.Image:
    store = FeedbackStore(url)
    png = store.image_png(sha256)
    store.close()
    assert png is not None
    return Image.open(io.BytesIO(png))


def test_feedback_is_off_without_a_database(serve: Serve, sample_files: dict[str, Path]) -> None:
    with serve() as base_url:
        response = send(base_url, sample_files["Cat"].read_bytes(), "Cat")
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert "FEEDBACK_DATABASE_URL" in response.json()["detail"]
        assert httpx.get(f"{base_url}/version").json()["feedback"]["enabled"] is False


def test_without_authentication_nobody_can_withdraw_a_label(serve: Serve, tmp_path: Path) -> None:
    """Anonymous feedback belongs to nobody: withdrawing is the operator's (`feedback delete`)."""
    cat = encode(Image.new("RGB", (64, 48), (90, 60, 30)), "PNG")
    with serve(feedback_database_url=f"sqlite:///{tmp_path / 'feedback.db'}") as base_url:
        sha256 = send(base_url, cat, "Cat").json()["sha256"]
        refused = httpx.delete(f"{base_url}/feedback/{sha256}")
    assert refused.status_code == 403
    assert "feedback delete" in refused.json()["detail"]


def test_a_photo_is_stored_upright_small_and_without_metadata_with_its_label(
    serve: Serve, feedback_database: str
) -> None:
    # 2000x1000 stored with EXIF orientation 6 (rotate 90°) and a GPS position: a phone photo.
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 24.0)}
    photo = encode(Image.new("RGB", (2000, 1000), (10, 120, 200)), "JPEG", exif=exif.tobytes())
    with serve(feedback_database_url=feedback_database) as base_url:
        version = httpx.get(f"{base_url}/version").json()
        assert version["feedback"] == {
            "enabled": True,
            "required_scope": None,
            "retention_days": 180,
            "daily_quota": 200,
        }
        served = version["model"]["sha256"]
        response = send(base_url, photo, "dog", "phone.jpg", predicted="cat", model_sha256=served)
        assert response.status_code == 201, response.text
        answer = response.json()
        assert answer["sha256"] == hashlib.sha256(photo).hexdigest()
        assert answer["label"] == "Dog"  # the model's spelling
        assert answer["replaced"] is False
        metrics = httpx.get(f"{base_url}/metrics").text
    image = stored_image(feedback_database, answer["sha256"])
    assert image.format == "PNG"
    assert image.mode == "RGB"
    # Upright (portrait), in proportion, from the model's reduced decode: the longer side 448 to 512.
    assert image.height == 2 * image.width
    assert 448 <= image.height <= 512
    assert not image.getexif()
    assert 'cdo_feedback_total{label="Dog",predicted="Cat"} 1.0' in metrics
    assert f'cdo_feedback_verdicts_total{{model_sha256="{served}",verdict="wrong"}} 1.0' in metrics
    assert f'cdo_feedback_accuracy{{model_sha256="{served}"}} 0.0' in metrics


def test_an_image_of_a_pdf_is_stored_as_the_embedded_image(serve: Serve, tmp_path: Path) -> None:
    red = Image.new("RGB", (300, 200), (200, 30, 30))
    grey = Image.new("L", (90, 120), 100)
    document = hand_pdf([[jpeg_image(red)], [flate_image(grey), jpeg_image(red)]])
    embedded = read_document(document, DocumentLimits(10, 10, 10**7, 10)).images
    url = f"sqlite:///{tmp_path / 'feedback.db'}"
    with serve(feedback_database_url=url) as base_url:
        grey_answer = send(base_url, document, "Other", "doc.pdf", page="1", index="0")
        repeat_answer = send(base_url, document, "Cat", "doc.pdf", page="1", index="1")
        missing = send(base_url, document, "Cat", "doc.pdf")
        beyond = send(base_url, document, "Cat", "doc.pdf", page="4", index="0")
        negative = send(base_url, document, "Cat", "doc.pdf", page="-1", index="0")
    assert grey_answer.status_code == 201, grey_answer.text
    raster = embedded[1].data
    assert not isinstance(raster, bytes | None)
    assert grey_answer.json()["sha256"] == hashlib.sha256(raster.encoded).hexdigest()
    stored = stored_image(url, grey_answer.json()["sha256"])
    assert stored.size == (90, 120)
    assert stored.getpixel((45, 60)) == (100, 100, 100)
    # Page 1's second image repeats page 0's: the feedback is about that JPEG, stored once.
    assert repeat_answer.status_code == 201
    assert embedded[0].data is not None
    assert repeat_answer.json()["sha256"] == hashlib.sha256(embedded[0].data).hexdigest()  # type: ignore[arg-type]
    assert stored_image(url, repeat_answer.json()["sha256"]).size == (300, 200)
    assert missing.status_code == 422
    assert "'page' and 'index'" in missing.json()["detail"]
    assert beyond.status_code == 422
    assert "no image at page 4, index 0 (3 images in 2 pages)" in beyond.json()["detail"]
    assert negative.status_code == 422


def test_bad_requests_get_the_same_problems_as_predictions(serve: Serve, tmp_path: Path) -> None:
    cat = encode(Image.new("RGB", (64, 48), (90, 60, 30)), "PNG")
    url = f"sqlite:///{tmp_path / 'feedback.db'}"
    with serve(feedback_database_url=url, max_upload_bytes=200_000) as base_url:
        unknown_label = send(base_url, cat, "Horse")
        unknown_predicted = send(base_url, cat, "Cat", predicted="Horse")
        bad_hash = send(base_url, cat, "Cat", model_sha256="abc")
        no_label = httpx.post(f"{base_url}/feedback", files={"file": ("c.png", cat)})
        no_file = httpx.post(f"{base_url}/feedback", files={"label": (None, "Cat")})
        not_an_image = send(base_url, b"just some text", "Cat", "notes.txt")
        too_large = send(base_url, b"\x89PNG" + bytes(300_000), "Cat")
        not_multipart = httpx.post(f"{base_url}/feedback", json={"label": "Cat"})
        counts = FeedbackStore(url).counts()
    for response, status, words in [
        (unknown_label, 422, "'Horse' is not a label of this model: label must be one of Cat, Dog, Other"),
        (unknown_predicted, 422, "predicted must be one of Cat, Dog, Other"),
        (bad_hash, 422, "model_sha256 must be 64"),
        (no_label, 422, "Missing form part 'label'"),
        (no_file, 422, "Missing form part 'file'"),
        (not_an_image, 415, "Not a supported image"),
        (too_large, 413, "200,000 bytes"),
        (not_multipart, 415, "multipart/form-data"),
    ]:
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert words in response.json()["detail"]
    assert counts == (0, 0)


def test_a_database_that_is_down_refuses_feedback_but_not_predictions(
    serve: Serve, postgres: PostgresServer, sample_files: dict[str, Path]
) -> None:
    cat = sample_files["Cat"].read_bytes()
    url = postgres.create_database()
    with serve(feedback_database_url=url) as base_url:
        assert send(base_url, cat, "Cat").status_code == 201
        postgres.stop()
        try:
            refused = send(base_url, cat, "Cat")
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "30"
            assert refused.headers["content-type"] == "application/problem+json"
            assert "not stored" in refused.json()["detail"]
            assert "127.0.0.1" not in refused.text
            assert httpx.post(f"{base_url}/upload", files={"file": ("c.png", cat)}).status_code == 200
            assert httpx.get(f"{base_url}/ready").status_code == 200
            assert "cdo_feedback_unavailable_total 1.0" in httpx.get(f"{base_url}/metrics").text
        finally:
            postgres.start()
        assert send(base_url, cat, "Dog").status_code == 201  # back without a restart
    store = FeedbackStore(url)
    assert store.counts() == (1, 1)  # anonymous answers on one image: one vote, the latest
    assert [entry.labels for entry in store.labelled_images()] == [["Dog"]]
    store.close()


def test_a_service_starts_ready_while_its_database_is_down(serve: Serve, tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("the database's folder cannot be made here")
    with serve(feedback_database_url=f"sqlite:///{blocked / 'feedback.db'}") as base_url:
        assert httpx.get(f"{base_url}/ready").status_code == 200
        cat = encode(Image.new("RGB", (64, 64), (1, 2, 3)), "PNG")
        assert send(base_url, cat, "Cat").status_code == 503


def test_concurrent_feedback_from_many_clients_loses_nothing(serve: Serve, feedback_database: str) -> None:
    """48 clients at once, 24 images each labelled by two of them (anonymous, so one vote each: the
    partial unique index holds under concurrent writers): 24 images, 24 labels."""
    images = [encode(Image.new("RGB", (40, 30), (n, 255 - n, 7)), "PNG") for n in range(24)]
    with serve(feedback_database_url=feedback_database) as base_url, ThreadPoolExecutor(48) as pool:
        statuses = list(pool.map(lambda n: send(base_url, images[n % 24], "Other").status_code, range(48)))
    assert statuses == [201] * 48
    store = FeedbackStore(feedback_database)
    assert store.counts() == (24, 24)
    store.close()


def test_a_hundred_anonymous_posts_on_one_image_are_one_vote_in_the_export(
    serve: Serve, feedback_database: str, tmp_path: Path
) -> None:
    """The issue's stuffing: one client posts Dog 100 times on an image (auth off); the export has one
    voter for it, the latest answer."""
    cat = encode(Image.new("RGB", (80, 60), (200, 150, 90)), "PNG")
    with serve(feedback_database_url=feedback_database) as base_url, ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: send(base_url, cat, "Dog").status_code, range(100)))
        assert send(base_url, cat, "Cat").status_code == 201
    assert statuses == [201] * 100
    store = FeedbackStore(feedback_database)
    report = export_dataset(store, tmp_path / "export")
    store.close()
    exported = json.loads((tmp_path / "export" / "annotations.json").read_text())
    assert [(entry["annotation"]["label"], entry["voters"]) for entry in exported["annotations"]] == [
        ("cat", 1)
    ]
    assert report.per_label == {"cat": 1}

