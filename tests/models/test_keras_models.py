"""The course's Keras files, served with the course's preprocessing, and converted to ONNX."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from cats_dogs_other.api import create_app
from cats_dogs_other.inference.classifier import ImageClassifier
from cats_dogs_other.models.convert import convert_keras
from cats_dogs_other.settings import Settings
from tests.api.conftest import wait_until_ready
from tests.models.conftest import build_course_model, course_predict


@pytest.fixture(scope="module")
def images(labelled_files: list[tuple[str, Path]]) -> list[Path]:
    return [path for _, path in labelled_files[::23]]


@pytest.mark.parametrize("kind", ["keras", "h5"])
def test_keras_file_gives_the_course_numbers(
    keras_files: dict[str, Path], course_model: Any, images: list[Path], kind: str
) -> None:
    classifier = ImageClassifier.load(keras_files[kind])
    served = classifier.predict([p.read_bytes() for p in images])
    for path, result in zip(images, served, strict=True):
        expected = course_predict(course_model, path)
        assert np.abs(np.array(result.values) - expected).max() < 1e-4
        assert result.prediction == ["Cat", "Dog", "Other"][int(np.argmax(expected))]


def test_card_of_a_keras_model_says_what_it_assumed(keras_files: dict[str, Path]) -> None:
    card = ImageClassifier.load(keras_files["keras"]).card
    assert card.labels == ["Cat", "Dog", "Other"]
    assert card.outputs_are_probabilities is False  # sigmoid scores, reported as they are
    spec = card.preprocessing
    assert (spec.resample, spec.dtype, spec.layout, spec.height) == ("nearest", "float32", "NHWC", 224)
    assert spec.mean == (123.68, 116.779, 103.939)


def test_softmax_head_is_recognised_as_probabilities(tmp_path: Path) -> None:
    path = tmp_path / "softmax.keras"
    build_course_model(activation="softmax").save(str(path))
    classifier = ImageClassifier.load(path)
    assert classifier.card.outputs_are_probabilities is True


def test_keras_model_over_http(keras_files: dict[str, Path], course_model: Any, images: list[Path]) -> None:
    app = create_app(Settings(auth_disabled=True, model_uri=str(keras_files["keras"])))
    with TestClient(app) as client:
        wait_until_ready(client)
        response = client.post("/upload", files={"file": ("x.png", images[0].read_bytes())})
        assert (
            np.abs(np.array(response.json()["values"]) - course_predict(course_model, images[0])).max() < 1e-4
        )
        version = client.get("/version").json()["model"]
        assert version["source"] == str(keras_files["keras"])
        assert version["outputs_are_probabilities"] is False


def test_convert_serves_the_same_numbers_without_keras(
    keras_files: dict[str, Path], course_model: Any, images: list[Path], tmp_path: Path
) -> None:
    card = convert_keras(keras_files["keras"], tmp_path / "converted")
    assert card.preprocessing.resample == "nearest"
    script = (
        "import sys, json\n"
        "sys.modules['keras'] = None; sys.modules['torch'] = None  # neither may be needed now\n"
        "from cats_dogs_other.inference.classifier import ImageClassifier\n"
        f"c = ImageClassifier.load({str(tmp_path / 'converted' / 'model.onnx')!r})\n"
        f"paths = {[str(p) for p in images]!r}\n"
        "print(json.dumps([r.values for r in c.predict([open(p, 'rb').read() for p in paths])]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    served = json.loads(done.stdout)
    for path, values in zip(images, served, strict=True):
        assert np.abs(np.array(values) - course_predict(course_model, path)).max() < 1e-4


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cats_dogs_other.cli", *args], capture_output=True, text=True, timeout=180
    )


def test_convert_command(keras_files: dict[str, Path], tmp_path: Path) -> None:
    done = run_cli("convert", str(keras_files["h5"]), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert "scores (not probabilities)" in done.stdout
    assert json.loads((tmp_path / "out" / "model.json").read_text())["preprocessing"]["resample"] == "nearest"


def test_wrong_number_of_outputs_stops_at_start(tmp_path: Path, images: list[Path]) -> None:
    path = tmp_path / "two.keras"
    build_course_model(outputs=2).save(str(path))
    done = run_cli("serve", "--no-auth", "--port", "0", "--model", str(path))
    assert done.returncode == 2
    assert "2 outputs but its card names 3 labels" in done.stderr


def test_corrupt_keras_file_stops_at_start(
    tmp_path: Path, keras_files: dict[str, Path], images: list[Path]
) -> None:
    broken = tmp_path / "broken.keras"
    broken.write_bytes(keras_files["keras"].read_bytes()[:500])
    done = run_cli("predict", "--model", str(broken), str(images[0]))
    assert done.returncode == 2
    assert "not a loadable Keras model" in done.stderr


@pytest.mark.parametrize("uri", ["s3://bucket/model.onnx", "hf:someone/model", "gs://x/y.keras"])
def test_unknown_uri_scheme_says_what_is_accepted(uri: str, images: list[Path]) -> None:
    done = run_cli("predict", "--model", uri, str(images[0]))
    assert done.returncode == 2
    assert "Unknown model URI scheme" in done.stderr
    assert "models:/NAME@ALIAS" in done.stderr
