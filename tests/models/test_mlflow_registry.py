"""Models from a real MLflow tracking server, logged and registered the way the course does it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from cats_dogs_other.api import create_app
from cats_dogs_other.inference.classifier import ImageClassifier
from cats_dogs_other.models.errors import ModelLoadError
from cats_dogs_other.models.source import MlflowRegistry, resolve_model
from cats_dogs_other.settings import Settings
from tests.api.conftest import wait_until_ready
from tests.models.conftest import course_predict


def registry() -> MlflowRegistry:
    """The registry as the service sees it: from Settings, which reads MLFLOW_TRACKING_URI."""
    return Settings().mlflow_registry()


@pytest.fixture(scope="module")
def registered(mlflow_server: str, course_model: Any) -> dict[str, str]:
    """The course's steps: log the Keras model in a run, register it, point an alias at the version."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(mlflow_server)
    with mlflow.start_run() as run:
        mlflow.keras.log_model(course_model, name="model")
    version = mlflow.register_model(f"runs:/{run.info.run_id}/model", "cats-dogs-other-course")
    MlflowClient(mlflow_server).set_registered_model_alias(
        "cats-dogs-other-course", "champion", version.version
    )
    return {"run_id": run.info.run_id, "version": str(version.version)}


@pytest.fixture
def tracking(mlflow_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def image(labelled_files: list[tuple[str, Path]]) -> Path:
    return labelled_files[40][1]


def uris(registered: dict[str, str]) -> list[str]:
    return [
        "models:/cats-dogs-other-course@champion",
        f"models:/cats-dogs-other-course/{registered['version']}",
        f"runs:/{registered['run_id']}/model",
    ]


def test_registry_uris_serve_the_same_numbers_as_the_file(
    registered: dict[str, str], tracking: Path, course_model: Any, keras_files: dict[str, Path], image: Path
) -> None:
    expected = course_predict(course_model, image)
    from_file = ImageClassifier.load(keras_files["keras"]).predict([image.read_bytes()])[0].values
    for uri in uris(registered):
        source = resolve_model(uri, tracking, registry=registry())
        assert source.kind == "keras"
        assert source.path.name == "model.keras"
        (result,) = ImageClassifier.from_source(source).predict([image.read_bytes()])
        assert np.abs(np.array(result.values) - expected).max() < 1e-4, uri
        assert np.abs(np.array(result.values) - np.array(from_file)).max() < 1e-6, uri
        assert source.details["run_id"] == registered["run_id"]


def test_alias_resolves_to_its_version_and_downloads_once(registered: dict[str, str], tracking: Path) -> None:
    first = resolve_model("models:/cats-dogs-other-course@champion", tracking, registry=registry())
    assert first.details["version"] == registered["version"]
    marker = first.path.parent.parent / ".complete"
    stamp = marker.stat().st_mtime_ns
    again = resolve_model("models:/cats-dogs-other-course@champion", tracking, registry=registry())
    assert again.path == first.path
    assert marker.stat().st_mtime_ns == stamp  # served from the cache, not downloaded again
    assert len([p for p in tracking.iterdir() if not p.name.startswith(".")]) == 1


def test_app_reports_where_the_model_came_from(
    registered: dict[str, str], tracking: Path, image: Path
) -> None:
    settings = Settings(
        auth_disabled=True, model_uri="models:/cats-dogs-other-course@champion", model_cache_dir=tracking
    )
    with TestClient(create_app(settings)) as client:
        wait_until_ready(client)
        model = client.get("/version").json()["model"]
        assert model["source"] == "models:/cats-dogs-other-course@champion"
        assert model["registry_version"] == registered["version"]
        assert model["run_id"] == registered["run_id"]
        assert client.post("/upload", files={"file": ("x.png", image.read_bytes())}).status_code == 200


def test_fetch_bakes_a_registry_keras_model_into_onnx(
    registered: dict[str, str], tracking: Path, course_model: Any, image: Path
) -> None:
    # What the Dockerfile's build stage does: registry URI in, ONNX + card out, no Keras needed to serve.
    from cats_dogs_other.models.convert import fetch_model

    onnx_path = fetch_model(
        "models:/cats-dogs-other-course@champion", tracking.parent / "baked", tracking, registry()
    )
    classifier = ImageClassifier.load(onnx_path)
    assert classifier.card.training["fetched_from"].startswith("models:/cats-dogs-other-course@champion")
    (result,) = classifier.predict([image.read_bytes()])
    assert np.abs(np.array(result.values) - course_predict(course_model, image)).max() < 1e-4


def test_unreachable_registry_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    with pytest.raises(ModelLoadError, match="Cannot fetch models:/anything/1 from the MLflow server"):
        resolve_model("models:/anything/1", tmp_path, registry=registry())


def test_registry_credentials_never_reach_the_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://ci-bot:s3cr3t-t0ken@127.0.0.1:9")
    with pytest.raises(ModelLoadError) as caught:
        resolve_model("models:/anything/1", tmp_path, registry=registry())
    assert "s3cr3t-t0ken" not in str(caught.value)
    assert "http://***@127.0.0.1:9" in str(caught.value)


def test_unknown_registered_model_says_so(mlflow_server: str, tracking: Path) -> None:
    with pytest.raises(ModelLoadError, match="Cannot fetch models:/no-such-model@champion"):
        resolve_model("models:/no-such-model@champion", tracking, registry=registry())


def test_registry_uri_without_tracking_uri(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ModelLoadError, match="needs MLFLOW_TRACKING_URI"):
        resolve_model("models:/x/1", tmp_path, registry=registry())


def test_serve_stops_at_start_when_the_registry_is_down(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cats_dogs_other.cli", "serve", "--no-auth", "--model", "models:/x@champion"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "MLFLOW_TRACKING_URI": "http://127.0.0.1:9", "HOME": str(tmp_path)},
    )
    assert done.returncode == 2
    assert "Cannot fetch models:/x@champion from the MLflow server at http://127.0.0.1:9" in done.stderr


@pytest.mark.slow
def test_train_logs_registers_and_serves_from_the_registry(
    mlflow_server: str, dataset_dir: Path, tmp_path: Path, labelled_files: list[tuple[str, Path]]
) -> None:
    data = tmp_path / "data"
    for folder in ("cat", "dog", "other"):
        (data / folder).mkdir(parents=True)
        for path in sorted((dataset_dir / folder).glob("*.png"))[::6][:6]:
            shutil.copy(path, data / folder / path.name)
    env = {"PATH": "/usr/bin:/bin", "MLFLOW_TRACKING_URI": mlflow_server, "HOME": str(tmp_path)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cats_dogs_other.cli",
            "train",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "out"),
            "--folds",
            "2",
            "--register",
            "cats-dogs-other-trained",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "logged to MLflow: models:/cats-dogs-other-trained/1" in done.stdout
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        source = resolve_model("models:/cats-dogs-other-trained/1", tmp_path / "cache", registry=registry())
    assert source.kind == "onnx"
    assert source.card is not None
    assert (
        source.card.metrics["validation"]["images"] + source.card.training["evaluation_split"]["images"] == 18
    )
    images = [p.read_bytes() for _, p in labelled_files[::30]]
    from_registry = ImageClassifier.from_source(source).predict(images)
    from_file = ImageClassifier.load(tmp_path / "out" / "model.onnx").predict(images)
    assert [r.values for r in from_registry] == [r.values for r in from_file]


def test_evaluate_logs_its_report_on_the_candidates_run(
    mlflow_server: str,
    tracking: Path,
    monkeypatch: pytest.MonkeyPatch,
    labelled_files: list[tuple[str, Path]],
) -> None:
    """`evaluate runs:/...`: the report's numbers become metrics of the run that logged the model, and
    the reports its artifacts, so the registry shows how a version was judged."""
    import json

    import mlflow
    from mlflow import MlflowClient

    from cats_dogs_other.models.card import default_model_path

    mlflow.set_tracking_uri(mlflow_server)
    model = default_model_path()
    with mlflow.start_run() as run:  # as `train` logs a model: plain ONNX + card under model/
        mlflow.log_artifact(str(model), artifact_path="model")
        mlflow.log_artifact(str(model.with_name("model.json")), artifact_path="model")
    data = tracking.parent / "data"
    for label, path in labelled_files[::20]:
        (data / label.lower()).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, data / label.lower() / path.name)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tracking))
    out = tracking.parent / "report"
    done = subprocess.run(
        [
            *[sys.executable, "-m", "cats_dogs_other.cli", "evaluate", f"runs:/{run.info.run_id}/model"],
            *["--data", str(data), "--out", str(out), "--variants", "colour", "grayscale"],
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert f"logged to MLflow run {run.info.run_id}" in done.stdout
    report = json.loads((out / "evaluation.json").read_text())["models"]["candidate"]["variants"]
    client = MlflowClient(mlflow_server)
    logged = client.get_run(run.info.run_id).data.metrics
    for variant in ("colour", "grayscale"):
        assert logged[f"evaluation_{variant}_accuracy"] == report[variant]["accuracy"]
        assert logged[f"evaluation_{variant}_ece"] == report[variant]["expected_calibration_error"]
        assert logged[f"evaluation_{variant}_unsure"] == report[variant]["unsure_share"]
    artifacts = sorted(a.path for a in client.list_artifacts(run.info.run_id, "evaluation"))
    assert artifacts == ["evaluation/evaluation.json", "evaluation/evaluation.md"]
