"""The inference engine on the shipped default model and on real images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cats_dogs_other.inference.classifier import ImageClassifier, ModelLoadError
from cats_dogs_other.inference.decode import InvalidImageError
from cats_dogs_other.models.card import ModelCard, default_model_path


def test_real_images_are_classified_with_probabilities(
    classifier: ImageClassifier, sample_files: dict[str, Path]
) -> None:
    for label, path in sample_files.items():
        (result,) = classifier.predict([path.read_bytes()])
        assert result.prediction == label
        assert len(result.values) == 3
        assert all(0.0 <= v <= 1.0 for v in result.values)
        assert abs(sum(result.values) - 1.0) < 1e-5
        assert result.as_dict() == {"prediction": label, "values": result.values}


def test_batch_gives_the_same_answers_as_one_by_one(
    classifier: ImageClassifier, labelled_files: list[tuple[str, Path]]
) -> None:
    files = [path.read_bytes() for _, path in labelled_files[::9]]
    batch = classifier.predict(files)
    single = [classifier.predict([data])[0] for data in files]
    assert [r.prediction for r in batch] == [r.prediction for r in single]
    assert np.abs(np.array([r.values for r in batch]) - np.array([r.values for r in single])).max() < 1e-5


def test_predict_raises_the_clear_error_for_a_bad_image(classifier: ImageClassifier) -> None:
    with pytest.raises(InvalidImageError):
        classifier.predict([b"not an image"])


def test_the_shipped_model_classifies_the_dataset(
    classifier: ImageClassifier, labelled_files: list[tuple[str, Path]]
) -> None:
    predictions = classifier.predict([path.read_bytes() for _, path in labelled_files])
    correct = sum(p.prediction == label for (label, _), p in zip(labelled_files, predictions, strict=True))
    assert correct / len(labelled_files) >= 0.97


def test_default_model_metadata(classifier: ImageClassifier) -> None:
    assert classifier.model_path == default_model_path()
    assert classifier.labels == ["Cat", "Dog", "Other"]
    assert len(classifier.sha256) == 64
    classifier.warm_up()


def test_missing_model_file_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        ImageClassifier.load(tmp_path / "absent.onnx")


def test_corrupt_model_file_is_a_load_error(tmp_path: Path) -> None:
    broken = tmp_path / "model.onnx"
    broken.write_bytes(default_model_path().read_bytes()[:5000])
    with pytest.raises(ModelLoadError, match="not a loadable ONNX model"):
        ImageClassifier.load(broken)


def test_card_that_disagrees_with_the_outputs_is_a_load_error(tmp_path: Path) -> None:
    shutil.copy(default_model_path(), tmp_path / "model.onnx")
    card = json.loads((default_model_path().parent / "model.json").read_text())
    card["labels"] = ["Cat", "Dog"]
    (tmp_path / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match="3 outputs but its card names 2 labels"):
        ImageClassifier.load(tmp_path / "model.onnx")


def test_invalid_card_is_a_load_error(tmp_path: Path) -> None:
    shutil.copy(default_model_path(), tmp_path / "model.onnx")
    (tmp_path / "model.json").write_text('{"preprocessing": {"layout": "sideways"}}')
    with pytest.raises(ModelLoadError, match="Model card"):
        ImageClassifier.load(tmp_path / "model.onnx")


def test_model_without_card_gets_the_default_card(tmp_path: Path, sample_files: dict[str, Path]) -> None:
    shutil.copy(default_model_path(), tmp_path / "classifier.onnx")
    loaded = ImageClassifier.load(tmp_path / "classifier.onnx")
    assert loaded.card == ModelCard()
    (result,) = loaded.predict([sample_files["Dog"].read_bytes()])
    assert result.prediction == "Dog"
