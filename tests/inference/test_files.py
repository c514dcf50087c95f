"""Putting each answer back in its place (`files.outcomes_of`), without a model: files in order, a
document's images by position, copies answered with their originals', refused files and images apart."""

from __future__ import annotations

import pytest

from cats_dogs_other.inference.classifier import Prediction
from cats_dogs_other.inference.decode import ImageErrorKind, InvalidImageError
from cats_dogs_other.inference.documents import (
    Document,
    DocumentErrorKind,
    EmbeddedImage,
    ImagePosition,
    InvalidDocumentError,
)
from cats_dogs_other.inference.files import (
    DocumentOutcome,
    ImageFileOutcome,
    ReadFile,
    RefusedFile,
    SentFile,
    outcomes_of,
)


def answer(label: str) -> Prediction:
    return Prediction(label, [0.5, 0.25, 0.25])


def test_each_file_gets_its_outcomes_in_order() -> None:
    corrupt = InvalidImageError(ImageErrorKind.CORRUPT, "corrupt")
    document = Document(
        pages=3,
        images=[
            EmbeddedImage(ImagePosition(0, 0), 10, 20, data=b"a"),
            EmbeddedImage(ImagePosition(0, 1), 1, 1, error=corrupt),  # refused while reading
            EmbeddedImage(ImagePosition(1, 0), 30, 40, data=b"b"),
            EmbeddedImage(ImagePosition(2, 0), 10, 20, duplicate_of=ImagePosition(0, 0)),
            EmbeddedImage(ImagePosition(2, 1), 1, 1, duplicate_of=ImagePosition(0, 1)),
        ],
    )
    refused = InvalidDocumentError(DocumentErrorKind.ENCRYPTED, "encrypted")
    read = [
        ReadFile(SentFile("one.png", b"1")),
        ReadFile(SentFile("doc.pdf", b"%PDF"), document=document),
        ReadFile(SentFile("locked.pdf", b"%PDF"), refused=refused),
        ReadFile(SentFile(None, b"2")),
    ]
    assert [len(file.to_classify()) for file in read] == [1, 2, 0, 1]
    image, doc, locked, last = outcomes_of(
        read, [answer("Cat"), answer("Dog"), answer("Other"), answer("Cat")]
    )

    assert image == ImageFileOutcome("one.png", answer("Cat"))
    assert isinstance(doc, DocumentOutcome)
    assert (doc.name, doc.pages) == ("doc.pdf", 3)
    assert [(i.position, i.width, i.height) for i in doc.images] == [
        (ImagePosition(0, 0), 10, 20),
        (ImagePosition(0, 1), 1, 1),
        (ImagePosition(1, 0), 30, 40),
        (ImagePosition(2, 0), 10, 20),
        (ImagePosition(2, 1), 1, 1),
    ]
    assert [i.outcome for i in doc.images] == [
        answer("Dog"),
        corrupt,
        answer("Other"),
        answer("Dog"),
        corrupt,
    ]
    assert [i.duplicate_of for i in doc.images] == [
        None,
        None,
        None,
        ImagePosition(0, 0),
        ImagePosition(0, 1),
    ]
    assert locked == RefusedFile("locked.pdf", refused)
    assert last == ImageFileOutcome(None, answer("Cat"))


def test_outcomes_out_of_step_with_the_images_are_a_bug_not_an_answer() -> None:
    read = [ReadFile(SentFile("one.png", b"1"))]
    with pytest.raises(AssertionError, match="more outcomes"):
        outcomes_of(read, [answer("Cat"), answer("Dog")])
    with pytest.raises(AssertionError, match="fewer outcomes"):
        outcomes_of(read, [])
