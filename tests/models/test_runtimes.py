"""The runtimes an ONNX model runs on (INFERENCE_RUNTIME): ONNX Runtime and OpenVINO give the same labels
on the course's images, values within a stated tolerance; "auto" takes the one measured fastest in the
service; a runtime that cannot run a model says why."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cats_dogs_other.inference.classifier import ImageClassifier
from cats_dogs_other.models.convert import convert_keras
from cats_dogs_other.models.errors import ModelLoadError
from cats_dogs_other.models.runners import installed_runtimes

pytest.importorskip("openvino", reason="the `openvino` extra is not installed (make install installs it)")

# The largest difference in a value between the runtimes (docs/decisions.md, *The ceiling moved*): both
# compute in float32, but the int8 model's quantized layers run on different kernels. Measured on the
# course's 139 images with the default model: 0.0497 at most, over 0.01 on 3 images, median 6e-5 (the
# model before it: 0.0012); how far depends on the calibration's scales. The labels must agree exactly.
TOLERANCE = 0.05
MEDIAN_TOLERANCE = 1e-3
# A float32 model (a converted Keras file) has no such layers: the runtimes agree as Keras and ONNX do.
FLOAT_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def course_bytes(labelled_files: list[tuple[str, Path]]) -> list[bytes]:
    return [path.read_bytes() for _, path in labelled_files]


def by_runtime(model: Path | None = None) -> dict[str, ImageClassifier]:
    return {runtime: ImageClassifier.load(model, runtime=runtime) for runtime in ("onnxruntime", "openvino")}


def test_both_runtimes_give_the_same_labels_on_the_course_images(course_bytes: list[bytes]) -> None:
    classifiers = by_runtime()
    assert {name: c.runtime for name, c in classifiers.items()} == {
        "onnxruntime": "onnxruntime",
        "openvino": "openvino",
    }
    answers = {name: c.predict(course_bytes) for name, c in classifiers.items()}
    ort, ov = answers["onnxruntime"], answers["openvino"]
    assert [a.prediction for a in ort] == [a.prediction for a in ov]
    differences = [
        np.abs(np.array(a.values) - np.array(b.values)).max() for a, b in zip(ort, ov, strict=True)
    ]
    assert max(differences) < TOLERANCE, f"values differ by up to {max(differences):.4f}"
    assert np.median(differences) < MEDIAN_TOLERANCE


def test_a_users_converted_keras_model_runs_on_both(
    keras_files: dict[str, Path], course_bytes: list[bytes], tmp_path: Path
) -> None:
    """A float32 model of the course's kind (not quantized): the same labels, the same values to 1e-4."""
    convert_keras(keras_files["keras"], tmp_path / "converted")
    classifiers = by_runtime(tmp_path / "converted" / "model.onnx")
    sample = course_bytes[::7]
    ort, ov = (classifiers[name].predict(sample) for name in ("onnxruntime", "openvino"))
    assert [a.prediction for a in ort] == [a.prediction for a in ov]
    difference = max(
        np.abs(np.array(a.values) - np.array(b.values)).max() for a, b in zip(ort, ov, strict=True)
    )
    assert difference < FLOAT_TOLERANCE, f"values differ by up to {difference:.6f}"


def test_auto_takes_the_runtime_measured_fastest_in_the_service() -> None:
    assert installed_runtimes() == ["onnxruntime", "openvino"]
    assert ImageClassifier.load().runtime == "onnxruntime"


def run_without_openvino(code: str) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh interpreter where `openvino` cannot be imported, as without the extra."""
    script = "import sys\nsys.modules['openvino'] = None\n" + code
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)


def test_without_openvino_auto_runs_onnx_runtime_and_asking_for_openvino_says_how_to_get_it() -> None:
    done = run_without_openvino(
        "from cats_dogs_other.inference.classifier import ImageClassifier\n"
        "from cats_dogs_other.models.errors import ModelLoadError\n"
        "print(ImageClassifier.load().runtime)\n"
        "try:\n"
        "    ImageClassifier.load(runtime='openvino')\n"
        "except ModelLoadError as error:\n"
        "    print(error)\n"
    )
    assert done.returncode == 0, done.stderr
    runtime, error = done.stdout.splitlines()
    assert runtime == "onnxruntime"
    assert "pip install 'cats-dogs-other[openvino]'" in error


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_a_keras_file_with_a_runtime_asked_for_says_to_convert_it(
    keras_files: dict[str, Path], runtime: str
) -> None:
    with pytest.raises(ModelLoadError, match="cats-dogs-other convert"):
        ImageClassifier.load(keras_files["keras"], runtime=runtime)  # type: ignore[arg-type]
    assert ImageClassifier.load(keras_files["keras"]).runtime == "keras"  # auto: Keras runs it


def test_a_model_without_the_cards_input_is_refused_by_openvino_naming_both(tmp_path: Path) -> None:
    from cats_dogs_other.models.card import ModelCard

    default = ImageClassifier.load()
    card = ModelCard(input_name="pixels")
    with pytest.raises(ModelLoadError, match=r"no input named 'pixels'.*'image'"):
        ImageClassifier.load(default.model_path, card=card, runtime="openvino")
