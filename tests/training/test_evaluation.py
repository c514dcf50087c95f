"""`cats-dogs-other evaluate`: the variants are what they say once the service has decoded them, the
calibration error is the textbook one, and the report's numbers are the model's own answers."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cats_dogs_other.inference.classifier import ImageClassifier
from cats_dogs_other.inference.decode import decode_image
from cats_dogs_other.models.card import ModelCard, default_model_path
from cats_dogs_other.training.dataset import find_images
from cats_dogs_other.training.evaluation import VARIANTS, expected_calibration_error
from cats_dogs_other.training.split import EvaluationSplit


def pixels(data: bytes) -> np.ndarray:
    """What the service's decoder makes of a file: upright RGB."""
    return np.asarray(decode_image(data), dtype=np.int16)


def test_each_variant_reaches_the_model_as_it_says(sample_files: dict[str, Path]) -> None:
    original = decode_image(sample_files["Dog"].read_bytes())
    base = np.asarray(original, dtype=np.int16)
    seen = {name: pixels(make(original)) for name, make in VARIANTS.items()}

    assert np.array_equal(seen["colour"], base)
    grey = seen["grayscale"]
    assert grey.shape == base.shape
    assert np.array_equal(grey[..., 0], grey[..., 1])
    assert np.array_equal(grey[..., 1], grey[..., 2])
    assert np.array_equal(seen["mirrored"], base[:, ::-1])
    assert max(seen["thumbnail_96px"].shape[:2]) == 96
    # Stored turned a quarter with EXIF orientation 6: upright again once decoded, within JPEG's error.
    rotated_file = VARIANTS["exif_rotated"](original)
    with Image.open(io.BytesIO(rotated_file)) as stored:
        assert stored.size == (original.height, original.width)
    assert seen["exif_rotated"].shape == base.shape
    assert np.abs(seen["exif_rotated"] - base).mean() < 6
    assert seen["jpeg_quality_30"].shape == base.shape
    assert len(VARIANTS["jpeg_quality_30"](original)) < len(VARIANTS["colour"](original)) / 3
    assert seen["brighter"].mean() > base.mean() + 10


def test_expected_calibration_error_is_the_gap_between_confidence_and_accuracy() -> None:
    right = np.ones(10)
    assert expected_calibration_error(np.ones(10), right) == 0.0
    # Sure of every answer, right about half: a gap of half.
    assert expected_calibration_error(np.full(10, 0.95), np.array([1.0, 0.0] * 5)) == pytest.approx(0.45)
    # Two bins, each well calibrated: no gap; the bins are weighted by their share of answers.
    confidence = np.array([0.55, 0.55, 0.95, 0.95, 0.95, 0.95])
    assert expected_calibration_error(confidence, np.array([1, 0, 1, 1, 1, 1.0])) == pytest.approx(
        (2 / 6) * 0.05 + (4 / 6) * 0.05
    )
    assert expected_calibration_error(np.array([]), np.array([])) == 0.0


@pytest.fixture
def small_dataset(dataset_dir: Path, tmp_path: Path) -> Path:
    """Four course images a class, in the class folders `train` and `evaluate` read."""
    folder = tmp_path / "data"
    for label in ("cat", "dog", "other"):
        (folder / label).mkdir(parents=True)
        for path in sorted((dataset_dir / label).glob("*.png"))[:4]:
            shutil.copy(path, folder / label / path.name)
    return folder


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cats_dogs_other.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_evaluate_reports_the_models_own_answers_and_compares_two(
    small_dataset: Path, tmp_path: Path, classifier: ImageClassifier
) -> None:
    out = tmp_path / "report"
    model = str(default_model_path())
    done = run_cli(
        *["evaluate", model, "--against", model, "--data", str(small_dataset), "--out", str(out)],
        *["--variants", "colour", "grayscale", "--all-images"],
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "evaluation.json").read_text())
    assert report["images"] == 12
    assert report["split"] is None
    assert set(report["models"]) == {"candidate", "champion"}
    candidate = report["models"]["candidate"]
    assert classifier.sha256 in candidate["model"]
    assert set(candidate["variants"]) == {"colour", "grayscale"}
    colour = candidate["variants"]["colour"]
    # The confusion matrix holds the model's answers to the files as they are.
    answers = {}
    for label in ("Cat", "Dog", "Other"):
        files = sorted((small_dataset / label.lower()).iterdir())
        answers[label] = [p.prediction for p in classifier.predict([f.read_bytes() for f in files])]
    matrix = colour["confusion_matrix"]["matrix"]
    for row, label in enumerate(("Cat", "Dog", "Other")):
        assert matrix[row] == [answers[label].count(other) for other in ("Cat", "Dog", "Other")]
    right = sum(answers[label].count(label) for label in answers)
    assert colour["accuracy"] == pytest.approx(right / 12, abs=1e-4)
    assert 0 <= colour["expected_calibration_error"] <= 1
    assert report["models"]["champion"]["variants"] == candidate["variants"]  # the same model file
    markdown = (out / "evaluation.md").read_text()
    assert "| colour |" in markdown
    assert "## candidate against champion" in markdown
    assert "| grayscale |" in markdown
    assert "+0.0 |" in markdown


def test_evaluate_judges_on_the_documents_training_held_out(dataset_dir: Path, tmp_path: Path) -> None:
    """By default only the held-out documents are evaluated on, and the report says whether each model
    was trained without them: the shipped model was."""
    done = run_cli(
        *["evaluate", "--data", str(dataset_dir), "--out", str(tmp_path), "--variants", "colour"],
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "evaluation.json").read_text())
    held_out = EvaluationSplit().evaluation_part(find_images(dataset_dir, ["Cat", "Dog", "Other"]))
    assert report["images"] == len(held_out) == 34
    assert report["split"]["groups"] == len({i.group for i in held_out}) == 4
    candidate = report["models"]["candidate"]
    assert candidate["trained_without_these_images"] is True
    # The card's own held-out accuracy was measured on the same images, through the same decoding.
    card = ModelCard.load(default_model_path().with_suffix(".json"))
    assert candidate["variants"]["colour"]["accuracy"] == card.metrics["held_out"]["accuracy"]


def test_evaluate_says_what_is_missing(small_dataset: Path, tmp_path: Path) -> None:
    done = run_cli("evaluate", "--out", str(tmp_path))
    assert done.returncode == 2
    assert "--data" in done.stderr
    done = run_cli("evaluate", "--data", str(small_dataset), "--variants", "sepia", "--out", str(tmp_path))
    assert done.returncode == 2
    assert "no variant sepia" in done.stderr
    # None of these twelve images' documents is held out: nothing to judge on, and it says so.
    done = run_cli("evaluate", "--data", str(small_dataset), "--out", str(tmp_path))
    assert done.returncode == 2
    assert "is in the held-out evaluation set (--hold-out 0.25)" in done.stderr


def test_the_held_out_part_of_a_feedback_export_joins_the_evaluation_set(
    dataset_dir: Path, tmp_path: Path
) -> None:
    """A feedback export names each image by its sha256, so each is its own document: some of them are
    held out (by the same hash rule) and evaluated on beside the course's held-out documents."""
    import hashlib

    export = tmp_path / "export" / "images"
    for path in sorted(dataset_dir.glob("*/*.png"))[::2]:
        data = path.read_bytes()
        (export / path.parent.name).mkdir(parents=True, exist_ok=True)
        (export / path.parent.name / f"{hashlib.sha256(data).hexdigest()}.png").write_bytes(data)
    done = run_cli(
        *["evaluate", "--data", str(dataset_dir), "--data", str(export.parent)],
        *["--out", str(tmp_path / "report"), "--variants", "colour"],
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "report" / "evaluation.json").read_text())
    split = EvaluationSplit()
    labels = ["Cat", "Dog", "Other"]
    from_course = split.evaluation_part(find_images(dataset_dir, labels))
    from_feedback = split.evaluation_part(find_images(export, labels))
    assert from_feedback
    assert report["images"] == len(from_course) + len(from_feedback)
    assert report["split"]["groups"] == 4 + len(from_feedback)  # the course's 4 PDFs, each image
