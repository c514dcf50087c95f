"""Training end to end: real images in, a servable ONNX model and an honest model card out."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from cats_dogs_other.inference.classifier import ImageClassifier
from cats_dogs_other.models.card import ModelCard, default_model_path
from cats_dogs_other.training.dataset import dataset_sha256, find_images, group_folds
from cats_dogs_other.training.split import EvaluationSplit
from cats_dogs_other.training.train import TrainConfig, TrainResult, train


@pytest.fixture(scope="module")
def small_dataset(dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of a subset: 8 images per class from several PDFs."""
    root = tmp_path_factory.mktemp("subset")
    for folder in ("cat", "dog", "other"):
        (root / folder).mkdir()
        for path in sorted((dataset_dir / folder).glob("*.png"))[::5][:8]:
            shutil.copy(path, root / folder / path.name)
    return root


@pytest.fixture(scope="module")
def trained(small_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    out = tmp_path_factory.mktemp("model")
    return train(
        TrainConfig(data_dirs=(small_dataset,), out_dir=out, folds=3, command="cats-dogs-other train ...")
    )


def test_training_writes_a_servable_model_and_card(trained: TrainResult, small_dataset: Path) -> None:
    out = trained.model_path.parent
    card = ModelCard.load(out / "model.json")
    assert card.labels == ["Cat", "Dog", "Other"]
    assert card.preprocessing.height == card.preprocessing.width == 224
    validation = card.metrics["validation"]
    held_out = card.training["evaluation_split"]["images"]
    assert sum(map(sum, validation["confusion_matrix"]["matrix"])) == 24 - held_out
    assert 0.0 <= validation["accuracy"] <= 1.0
    assert "PDF" in validation["scheme"]
    assert card.training["data_sha256"] == dataset_sha256(find_images(small_dataset, card.labels))
    assert card.training["command"] == "cats-dogs-other train ..."
    assert {"torch", "onnxruntime", "numpy", "pillow", "python"} <= set(card.training["library_versions"])

    classifier = ImageClassifier.load(trained.model_path)
    cat = sorted((small_dataset / "cat").glob("*.png"))[0]
    (result,) = classifier.predict([cat.read_bytes()])
    assert abs(sum(result.values) - 1.0) < 1e-5


def test_onnx_runtime_and_pytorch_agree(trained: TrainResult, labelled_files: list[tuple[str, Path]]) -> None:
    classifier = ImageClassifier.load(trained.model_path)
    batch = np.stack([classifier.decode(path.read_bytes()) for _, path in labelled_files[::7]])
    session = ort.InferenceSession(str(trained.model_path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {"image": batch})
    with torch.inference_mode():
        torch_out = trained.model(torch.from_numpy(batch)).numpy()
    assert onnx_out.shape == (len(batch), 3)
    assert np.abs(onnx_out - torch_out).max() < 1e-4


def test_dynamic_batch_axis(trained: TrainResult, labelled_files: list[tuple[str, Path]]) -> None:
    classifier = ImageClassifier.load(trained.model_path)
    for size in (1, 5):
        batch = np.stack([classifier.decode(path.read_bytes()) for _, path in labelled_files[:size]])
        assert classifier.run(batch).shape == (size, 3)


def test_folds_never_split_a_pdf(dataset_dir: Path) -> None:
    items = find_images(dataset_dir, ["Cat", "Dog", "Other"])
    folds = group_folds(items, 5)
    assert sorted(i for fold in folds for i in fold) == list(range(len(items)))
    groups_per_fold = [{items[i].group for i in fold} for fold in folds]
    for a in range(len(folds)):
        for b in range(a + 1, len(folds)):
            assert not groups_per_fold[a] & groups_per_fold[b]


@pytest.mark.slow
def test_full_training_reaches_97_percent_on_pdf_level_validation(dataset_dir: Path, tmp_path: Path) -> None:
    # The shipped configuration: int8 backbone, head fitted and validated on its features.
    result = train(TrainConfig(data_dirs=(dataset_dir,), out_dir=tmp_path, quantize=True))
    assert result.card.metrics["validation"]["accuracy"] >= 0.97
    assert "int8" in result.card.training["quantization"]


def test_quantized_model_is_smaller_and_agrees_with_float(
    trained: TrainResult, small_dataset: Path, tmp_path: Path, labelled_files: list[tuple[str, Path]]
) -> None:
    quantized = train(TrainConfig(data_dirs=(small_dataset,), out_dir=tmp_path, folds=3, quantize=True))
    assert quantized.model_path.stat().st_size < trained.model_path.stat().st_size / 3
    images = [path.read_bytes() for _, path in labelled_files[::6]]
    as_float = ImageClassifier.load(trained.model_path).predict(images)
    as_int8 = ImageClassifier.load(quantized.model_path).predict(images)
    agreement = np.mean([a.prediction == b.prediction for a, b in zip(as_float, as_int8, strict=True)])
    assert agreement >= 0.9
    assert max(abs(sum(p.values) - 1) for p in as_int8) < 1e-5


def test_shipped_card_describes_the_shipped_model_and_this_dataset(dataset_dir: Path) -> None:
    card = ModelCard.load(default_model_path().with_suffix(".json"))
    assert card.metrics["validation"]["accuracy"] >= 0.97
    # Issue 32: every image predicted without its document, at least the 97.8% of the model before,
    # and grayscale within 2 points of colour (it was 2.2 points under).
    grouped = card.metrics["pdf_grouped"]
    assert grouped["images"] == 139
    assert grouped["accuracy"] >= 0.978
    assert grouped["accuracy"] - grouped["grayscale_accuracy"] <= 0.02
    assert card.metrics["validation"]["accuracy"] - card.metrics["validation"]["grayscale_accuracy"] <= 0.02
    assert "grayscale" in card.training["augmentation"]
    split = EvaluationSplit()
    assert split.kept_out_of(card)
    held_out = split.evaluation_part(find_images(dataset_dir, card.labels))
    assert card.training["evaluation_split"]["groups"] == sorted({i.group for i in held_out})
    assert card.metrics["held_out"]["images"] == len(held_out) > 0
    items = find_images(dataset_dir, card.labels)
    assert card.training["data_sha256"] == dataset_sha256(items)
    assert card.training["command"].startswith("cats-dogs-other train")
    assert card.training["quantization"].startswith("static int8")


@pytest.mark.slow
def test_training_from_the_course_pdfs_matches_training_from_its_images(
    dataset_dir: Path, course_pdfs: list[Path], tmp_path: Path, labelled_files: list[tuple[str, Path]]
) -> None:
    from tests.conftest import ANNOTATIONS_FILE, PDFS_DIR

    from_images = train(TrainConfig(data_dirs=(dataset_dir,), out_dir=tmp_path / "images"))
    from_pdfs = train(
        TrainConfig(data_dirs=(), pdfs_dir=PDFS_DIR, annotations=ANNOTATIONS_FILE, out_dir=tmp_path / "pdfs")
    )
    pdf_validation = from_pdfs.card.metrics["validation"]
    held_out = from_pdfs.card.training["evaluation_split"]
    # Every annotated image (the repeated last pages left out), trained on or held out by document.
    assert pdf_validation["images"] + held_out["images"] == 139
    assert pdf_validation["groups"] + len(held_out["groups"]) == len(course_pdfs) == 23
    assert pdf_validation["accuracy"] == from_images.card.metrics["validation"]["accuracy"]
    assert from_pdfs.card.training["source"] == "pdfs"
    assert from_pdfs.card.training["annotations"] == str(ANNOTATIONS_FILE)
    images = [path.read_bytes() for _, path in labelled_files]
    by_images = ImageClassifier.load(from_images.model_path).predict(images)
    by_pdfs = ImageClassifier.load(from_pdfs.model_path).predict(images)
    # JPEG decoders differ by a level between the course's extraction and this one; labels must not.
    assert [p.prediction for p in by_pdfs] == [p.prediction for p in by_images]


def test_an_annotation_without_its_image_is_an_error(tmp_path: Path, course_pdfs: list[Path]) -> None:
    import json

    from cats_dogs_other.settings import Settings
    from cats_dogs_other.training.dataset import find_document_images

    export = {
        "annotations": [
            {"fileName": f"{course_pdfs[0].stem}_page9_index0.png", "annotation": {"label": "cat"}}
        ]
    }
    annotations = tmp_path / "annotations.json"
    annotations.write_text(json.dumps(export))
    with pytest.raises(FileNotFoundError, match="1 annotated images are not in the PDFs"):
        find_document_images(
            course_pdfs[0].parent, annotations, ["Cat", "Dog", "Other"], Settings().document_limits()
        )
