"""The engine's one path (`InferenceService.classify_files`, over `classify`), with the real model:
outcomes in order, a bad image in its place or, failing fast, raised with its position; a document's
images answered in their places, a refused document in its own."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from cats_dogs_other.inference.classifier import ImageClassifier, Prediction
from cats_dogs_other.inference.decode import ImageErrorKind, InvalidImageError
from cats_dogs_other.inference.documents import DocumentErrorKind, ImagePosition
from cats_dogs_other.inference.files import (
    DocumentOutcome,
    FileOutcome,
    ImageFileOutcome,
    Outcome,
    RefusedFile,
    SentFile,
)
from cats_dogs_other.inference.service import InferenceService
from cats_dogs_other.settings import Settings

T = TypeVar("T")


def with_engine(classifier: ImageClassifier, work: Callable[[InferenceService], Awaitable[T]]) -> T:
    async def run() -> T:
        engine = InferenceService.configured(classifier, Settings())
        engine.start()
        try:
            return await work(engine)
        finally:
            await engine.stop()

    return asyncio.run(run())


def classify(classifier: ImageClassifier, images: list[bytes], fail_fast: bool) -> list[Outcome]:
    return with_engine(
        classifier, lambda engine: engine.classify(images, engine.request_budget(), fail_fast=fail_fast)
    )


def classify_files(classifier: ImageClassifier, files: list[SentFile]) -> list[FileOutcome]:
    return with_engine(classifier, lambda engine: engine.classify_files(files, engine.request_budget()))


def test_good_images_are_answered_beside_bad_ones(
    classifier: ImageClassifier, sample_files: dict[str, Path]
) -> None:
    dog, cat = sample_files["Dog"].read_bytes(), sample_files["Cat"].read_bytes()
    outcomes = classify(classifier, [dog, b"", cat, b"not an image"], fail_fast=False)
    assert isinstance(outcomes[0], Prediction)
    assert outcomes[0].prediction == "Dog"
    assert isinstance(outcomes[1], InvalidImageError)
    assert (outcomes[1].kind, outcomes[1].index) == (ImageErrorKind.EMPTY, 1)
    assert isinstance(outcomes[2], Prediction)
    assert outcomes[2].prediction == "Cat"
    assert isinstance(outcomes[3], InvalidImageError)
    assert (outcomes[3].kind, outcomes[3].index) == (ImageErrorKind.UNSUPPORTED, 3)


def test_the_same_image_gets_the_same_values_alone_and_in_company(
    classifier: ImageClassifier, sample_files: dict[str, Path]
) -> None:
    cat = sample_files["Cat"].read_bytes()
    (alone,) = classify(classifier, [cat], fail_fast=True)
    together = classify(classifier, [sample_files["Dog"].read_bytes(), cat], fail_fast=True)
    assert isinstance(alone, Prediction)
    assert isinstance(together[1], Prediction)
    assert alone.values == pytest.approx(together[1].values, abs=1e-5)


def test_failing_fast_raises_the_first_bad_image_with_its_position(
    classifier: ImageClassifier, sample_files: dict[str, Path]
) -> None:
    with pytest.raises(InvalidImageError) as caught:
        classify(classifier, [sample_files["Dog"].read_bytes(), b""], fail_fast=True)
    assert caught.value.kind is ImageErrorKind.EMPTY
    assert caught.value.index == 1


def test_files_get_one_outcome_each_in_order_with_a_documents_images_in_place(
    classifier: ImageClassifier, sample_files: dict[str, Path], course_pdfs: list[Path]
) -> None:
    document = course_pdfs[1]  # 3 pages: a dog, something else, the dog again (a copy)
    files = [
        SentFile("cat.png", sample_files["Cat"].read_bytes()),
        SentFile(document.name, document.read_bytes()),
        SentFile("broken.pdf", b"%PDF-1.7\nnot a document"),
        SentFile("notes.png", b"not an image"),
    ]
    cat, pdf, broken, notes = classify_files(classifier, files)
    assert isinstance(cat, ImageFileOutcome)
    assert isinstance(cat.outcome, Prediction)
    assert (cat.name, cat.outcome.prediction) == ("cat.png", "Cat")
    assert isinstance(pdf, DocumentOutcome)
    assert (pdf.name, pdf.pages) == (document.name, 3)
    positions = [(image.position.page, image.position.index) for image in pdf.images]
    assert positions == [(0, 0), (1, 0), (2, 0)]
    predictions = [image.outcome for image in pdf.images]
    assert all(isinstance(p, Prediction) for p in predictions)
    assert [p.prediction for p in predictions if isinstance(p, Prediction)] == ["Dog", "Other", "Dog"]
    assert pdf.images[2].duplicate_of == ImagePosition(0, 0)
    assert pdf.images[2].outcome is pdf.images[0].outcome  # a copy is answered with its original's
    assert isinstance(broken, RefusedFile)
    assert broken.error.kind is DocumentErrorKind.MALFORMED
    assert isinstance(notes, ImageFileOutcome)
    assert isinstance(notes.outcome, InvalidImageError)
    assert notes.outcome.kind is ImageErrorKind.UNSUPPORTED
    assert notes.outcome.index == 3  # its place among the images sent to the model (cat, 2 of the PDF)


def test_without_documents_a_pdf_is_just_an_unsupported_image(
    classifier: ImageClassifier, course_pdfs: list[Path]
) -> None:
    files = [SentFile(None, course_pdfs[1].read_bytes())]
    (outcome,) = with_engine(
        classifier,
        lambda engine: engine.classify_files(files, engine.request_budget(), documents=False),
    )
    assert isinstance(outcome, ImageFileOutcome)
    assert isinstance(outcome.outcome, InvalidImageError)
