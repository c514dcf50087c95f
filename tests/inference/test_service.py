"""The engine's one path (`InferenceService.classify`), with the real model: outcomes in order, a bad
image in its place or, failing fast, raised with its position."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cats_dogs_other.inference.classifier import ImageClassifier, Prediction
from cats_dogs_other.inference.decode import ImageErrorKind, InvalidImageError
from cats_dogs_other.inference.service import BatchingConfig, InferenceService, Outcome
from cats_dogs_other.settings import Settings


def classify(classifier: ImageClassifier, images: list[bytes], fail_fast: bool) -> list[Outcome]:
    settings = Settings()

    async def run() -> list[Outcome]:
        engine = InferenceService(
            classifier,
            max_pixels=settings.max_pixels,
            batching=BatchingConfig(settings.batch_max_size, settings.batch_max_wait_ms, settings.queue_max),
            decode_memory_bytes=settings.decode_memory_bytes,
            documents=settings.document_limits(),
        )
        engine.start()
        try:
            return await engine.classify(images, engine.request_budget(), fail_fast=fail_fast)
        finally:
            await engine.stop()

    return asyncio.run(run())


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
