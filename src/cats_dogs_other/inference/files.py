"""The engine's unit of work: the files a request sends, and one outcome per file.

A way in (a route, the CLI) hands the engine its files as `SentFile`s and gets back one `FileOutcome`
per file, in order: an image's outcome (`ImageFileOutcome`), a document's outcomes by position
(`DocumentOutcome`, a copy of an earlier image answered with its original's), or the refusal of a
document that cannot be read (`RefusedFile`). Reading documents, expanding them into images, putting
each answer back in its place: all of it is here and in `InferenceService.classify_files`, once, so a
way in only parses its request and renders these.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from cats_dogs_other.inference.classifier import Prediction
from cats_dogs_other.inference.decode import InvalidImageError
from cats_dogs_other.inference.documents import Document, EmbeddedImage, ImagePosition, InvalidDocumentError

# One image's outcome: its prediction, or why it could not be classified.
Outcome = Prediction | InvalidImageError


@dataclass(frozen=True)
class SentFile:
    """A file as a request sent it: its name (None when the way in has none) and its bytes."""

    name: str | None
    data: bytes


@dataclass(frozen=True)
class ImageFileOutcome:
    name: str | None
    outcome: Outcome


@dataclass(frozen=True)
class DocumentImageOutcome:
    """One image of a document: where it is, its size, and its outcome (its original's, for a copy)."""

    position: ImagePosition
    width: int
    height: int
    outcome: Outcome
    duplicate_of: ImagePosition | None = None


@dataclass(frozen=True)
class DocumentOutcome:
    name: str | None
    pages: int
    images: list[DocumentImageOutcome]


@dataclass(frozen=True)
class RefusedFile:
    """A document that could not be read at all: none of its images was classified."""

    name: str | None
    error: InvalidDocumentError


FileOutcome = ImageFileOutcome | DocumentOutcome | RefusedFile


@dataclass(frozen=True)
class ReadFile:
    """A sent file once read: an image file (`document` None), a document, or a refused document."""

    file: SentFile
    document: Document | None = None
    refused: InvalidDocumentError | None = None

    def to_classify(self) -> Sequence[bytes | EmbeddedImage]:
        """What the model must see of this file, in order."""
        if self.refused is not None:
            return []
        if self.document is None:
            return [self.file.data]
        return self.document.to_classify


def outcomes_of(read: Sequence[ReadFile], outcomes: Sequence[Outcome]) -> list[FileOutcome]:
    """Each file's outcome, from the outcomes of everything `to_classify` gave, in the same order."""
    answers = iter(outcomes)
    results: list[FileOutcome] = []
    for file in read:
        count = len(file.to_classify())
        mine = list(itertools.islice(answers, count))
        assert len(mine) == count, "fewer outcomes than images sent to the model"
        if file.refused is not None:
            results.append(RefusedFile(file.file.name, file.refused))
        elif file.document is None:
            (outcome,) = mine
            results.append(ImageFileOutcome(file.file.name, outcome))
        else:
            results.append(_document_outcome(file.file.name, file.document, mine))
    leftover = next(answers, None)
    assert leftover is None, "more outcomes than images sent to the model"
    return results


def _document_outcome(name: str | None, document: Document, classified: list[Outcome]) -> DocumentOutcome:
    """The document's images in page order, each with its outcome: its own (in `to_classify` order),
    its refusal, or, for a copy, its original's."""
    answers = iter(classified)
    by_position: dict[ImagePosition, Outcome] = {}
    images: list[DocumentImageOutcome] = []
    for image in document.images:
        if image.duplicate_of is not None:
            outcome = by_position[image.duplicate_of]
        elif image.error is not None:
            outcome = image.error
        else:
            assert image.data is not None, f"image {image.position} has no data, error or original"
            outcome = next(answers)
        by_position[image.position] = outcome
        images.append(
            DocumentImageOutcome(image.position, image.width, image.height, outcome, image.duplicate_of)
        )
    return DocumentOutcome(name, document.pages, images)
