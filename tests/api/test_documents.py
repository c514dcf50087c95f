"""PDFs through the API: `/predict` answers every embedded image; `/upload` stays the course's image route."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cats_dogs_other.inference import documents
from cats_dogs_other.inference.classifier import ImageClassifier
from cats_dogs_other.inference.documents import read_document
from cats_dogs_other.settings import Settings
from tests.pdfs import RawImage, flate_bomb, flate_image, hand_pdf, jpeg_image, pillow_pdf


def post_files(client: TestClient, *files: tuple[str, bytes]) -> list[dict[str, object]]:
    response = client.post(
        "/predict", files=[("files", (name, data, "application/pdf")) for name, data in files]
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert isinstance(answer, list)
    return answer


def test_a_course_document_is_answered_image_by_image_in_page_order(
    client: TestClient, course_pdfs: list[Path], classifier: ImageClassifier
) -> None:
    path = course_pdfs[0]
    (answer,) = post_files(client, (path.name, path.read_bytes()))
    document = read_document(path.read_bytes(), Settings().document_limits())
    assert answer["filename"] == path.name
    assert answer["pages"] == document.pages == 5
    images = answer["images"]
    assert isinstance(images, list)
    assert [(i["page"], i["index"]) for i in images] == [(p, 0) for p in range(5)]
    for entry, image in zip(images, document.images, strict=True):
        assert (entry["width"], entry["height"]) == (image.width, image.height)
    # The values are the engine's for the JPEG as stored in the document.
    for entry, image in zip(images[:-1], document.images[:-1], strict=True):
        assert isinstance(image.data, bytes)
        (expected,) = classifier.predict([image.data])
        assert entry["prediction"] == expected.prediction
        assert entry["values"] == expected.values
    assert images[-1]["duplicate_of"] == {"page": 0, "index": 0}
    assert images[-1]["values"] == images[0]["values"]
    assert all("duplicate_of" not in entry for entry in images[:-1])


def test_documents_agree_with_the_course_annotations_as_well_as_its_images(
    client: TestClient, course_pdfs: list[Path], course_annotations: dict[str, str], dataset_dir: Path
) -> None:
    from_documents: dict[str, str] = {}
    for start in range(0, len(course_pdfs), 8):  # /predict takes up to 16 files
        batch = course_pdfs[start : start + 8]
        for path, answer in zip(
            batch, post_files(client, *((p.name, p.read_bytes()) for p in batch)), strict=True
        ):
            for entry in answer["images"]:  # type: ignore[union-attr]
                if "duplicate_of" not in entry:
                    name = f"{path.stem}_page{entry['page']}_index{entry['index']}.png"
                    from_documents[name] = entry["prediction"].lower()
    assert sorted(from_documents) == sorted(course_annotations)
    from_images: dict[str, str] = {}
    names = sorted(course_annotations)
    for start in range(0, len(names), 16):
        chunk = names[start : start + 16]
        files = [(name, next(dataset_dir.glob(f"*/{name}")).read_bytes()) for name in chunk]
        for name, answer in zip(chunk, post_files(client, *files), strict=True):
            from_images[name] = str(answer["prediction"]).lower()
    agree_documents = sum(from_documents[n] == label for n, label in course_annotations.items())
    agree_images = sum(from_images[n] == label for n, label in course_annotations.items())
    assert agree_documents >= agree_images
    assert from_documents == from_images  # JPEG decoders may differ by a level; labels must not


def test_images_and_documents_mix_in_one_request(client: TestClient, sample_files: dict[str, Path]) -> None:
    from PIL import Image

    cat = Image.open(sample_files["Cat"])
    answer = post_files(
        client,
        ("dog.png", sample_files["Dog"].read_bytes()),
        ("cats.pdf", pillow_pdf([cat, Image.open(sample_files["Other"])])),
        ("blank.pdf", hand_pdf([[], []])),
        ("broken.pdf", b"%PDF-1.7\n" + b"\x00" * 100),
    )
    assert answer[0]["prediction"] == "Dog"
    document = answer[1]
    assert document["pages"] == 2
    assert [i["prediction"] for i in document["images"]] == ["Cat", "Other"]  # type: ignore[index]
    assert answer[2] == {"filename": "blank.pdf", "pages": 2, "images": []}
    error = answer[3]["error"]
    assert isinstance(error, dict)
    assert error["status"] == 400
    assert error["code"] == "malformed"
    assert "malformed or truncated" in error["detail"]


def test_one_bad_image_in_a_document_is_its_own_error(
    client: TestClient, sample_files: dict[str, Path]
) -> None:
    from PIL import Image

    dog = Image.open(sample_files["Dog"])
    data = hand_pdf([[jpeg_image(dog)], [flate_bomb(30000, 30000)], [flate_image(dog)]])
    (answer,) = post_files(client, ("mixed.pdf", data))
    first, bomb, last = answer["images"]  # type: ignore[misc]
    assert first["prediction"] == "Dog"
    assert bomb["error"]["status"] == 413
    assert "30000x30000" in bomb["error"]["detail"]
    assert (bomb["width"], bomb["height"]) == (30000, 30000)
    assert last["prediction"] == "Dog"  # the same picture, Flate-encoded: decoded by the library


def test_document_limits_answer_413_naming_the_setting(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_pdf_pages=2, max_images_per_document=3)
    from PIL import Image

    grey = Image.new("RGB", (32, 32), (90, 90, 90))
    (pages,) = post_files(client, ("long.pdf", hand_pdf([[]] * 3)))
    assert pages["error"]["status"] == 413  # type: ignore[index]
    assert "MAX_PDF_PAGES=2" in pages["error"]["detail"]  # type: ignore[index]
    many = hand_pdf(
        [[jpeg_image(grey, quality=q) for q in (50, 60)], [jpeg_image(grey, quality=q) for q in (70, 80)]]
    )
    (images,) = post_files(client, ("many.pdf", many))
    assert images["error"]["status"] == 413  # type: ignore[index]
    assert "MAX_IMAGES_PER_DOCUMENT=3" in images["error"]["detail"]  # type: ignore[index]


def test_an_encrypted_document_is_422(client: TestClient) -> None:
    from PIL import Image

    from tests.pdfs import encrypted_pdf

    (answer,) = post_files(client, ("secret.pdf", encrypted_pdf(Image.new("RGB", (8, 8)), "pw")))
    assert answer["error"]["status"] == 422  # type: ignore[index]
    assert answer["error"]["code"] == "encrypted"  # type: ignore[index]


def test_upload_refuses_a_pdf_with_415_naming_predict(client: TestClient, course_pdfs: list[Path]) -> None:
    response = client.post("/upload", files={"file": ("doc.jpg", course_pdfs[0].read_bytes(), "image/jpeg")})
    assert response.status_code == 415
    assert response.headers["content-type"] == "application/problem+json"
    assert "POST /predict" in response.json()["detail"]


def test_openapi_documents_both_answer_shapes(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    schema = document["paths"]["/predict"]["post"]["responses"]["200"]["content"]["application/json"][
        "schema"
    ]
    refs = {re.sub(r".*/", "", item["$ref"]) for item in schema["items"]["anyOf"]}
    assert refs == {"FilePrediction", "DocumentPrediction", "FileFailure"}
    components = document["components"]["schemas"]
    assert {"page", "index", "width", "height", "prediction", "values", "duplicate_of"} <= set(
        components["DocumentImagePrediction"]["properties"]
    )
    assert "PDF" in document["paths"]["/predict"]["post"]["description"]


def test_documents_are_counted_in_the_metrics(client: TestClient, course_pdfs: list[Path]) -> None:
    def sample(name: str) -> float:
        text = client.get("/metrics").text
        match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    before = sample('cdo_documents_total{outcome="read"}'), sample("cdo_document_images_sum")
    before_bad = sample('cdo_documents_total{outcome="malformed"}')
    post_files(client, (course_pdfs[0].name, course_pdfs[0].read_bytes()), ("bad.pdf", b"%PDF-1.4\n"))
    assert sample('cdo_documents_total{outcome="read"}') == before[0] + 1
    assert sample("cdo_document_images_sum") == before[1] + 5
    assert sample("cdo_document_pages_sum") >= 5
    assert sample('cdo_documents_total{outcome="malformed"}') == before_bad + 1


def test_one_request_of_many_document_images_is_answered_not_refused_as_overload(client: TestClient) -> None:
    """256 images in 4 PDFs, twice the model queue (QUEUE_MAX 128): one request never fills the queue
    by itself (its images go through a window), so an idle service answers every image."""
    from PIL import Image

    documents = [
        hand_pdf([[jpeg_image(Image.new("RGB", (120, 80), (k * 60, i * 4, 7)))] for i in range(64)])
        for k in range(4)
    ]
    answer = post_files(client, *((f"{k}.pdf", data) for k, data in enumerate(documents)))
    predictions = [image["prediction"] for document in answer for image in document["images"]]  # type: ignore[union-attr]
    assert len(predictions) == 256
    assert set(predictions) <= {"Cat", "Dog", "Other"}


def test_a_bug_on_the_document_path_is_a_500_not_the_clients_error(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Only pypdf's errors and the project's input errors are the client's: our own bug while reading a
    document is a 500 with the request id, logged with its traceback, so the 5xx alert sees it."""

    def planted(*args: object) -> None:
        raise KeyError("a bug of ours")

    monkeypatch.setattr(documents, "_embedded", planted)
    document = hand_pdf([[jpeg_image(Image.new("RGB", (8, 8)))]])
    response = client.post("/predict", files=[("files", ("d.pdf", document, "application/pdf"))])
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["request_id"] == response.headers["x-request-id"]
    assert "a bug of ours" not in response.text
    assert any("KeyError" in (record.exc_text or "") for record in caplog.records)


def test_a_decompression_bomb_in_a_document_is_413_beside_the_answered_images(client: TestClient) -> None:
    bomb = RawImage(
        b"/Width 5000 /Height 5000 /ColorSpace /DeviceRGB /BitsPerComponent 8 /Filter /FlateDecode",
        flate_bomb(5000, 5000).stream,
    )
    document = hand_pdf([[bomb, jpeg_image(Image.new("RGB", (64, 64), "red"))]])
    (answer,) = post_files(client, ("b.pdf", document))
    refused, answered = answer["images"]  # type: ignore[index]
    assert refused["error"]["status"] == 413
    assert refused["error"]["code"] == "decompression_bomb"
    assert (refused["page"], refused["index"]) == (0, 0)
    assert answered["prediction"] in {"Cat", "Dog", "Other"}
