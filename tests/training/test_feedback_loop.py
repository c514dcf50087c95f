"""The whole loop, with the real commands: serve with feedback on → predict → people correct some answers
→ export → train on the course's dataset plus the export → serve the new model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from cats_dogs_other.inference.classifier import file_sha256
from cats_dogs_other.models.card import ModelCard
from cats_dogs_other.training.dataset import dataset_sha256, find_images
from tests.api.conftest import ServeProcess, serve_command

LABELS = ["Cat", "Dog", "Other"]


def cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "cats_dogs_other.cli", *args], capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.slow
def test_corrections_become_the_next_model(
    tmp_path: Path, dataset_dir: Path, labelled_files: list[tuple[str, Path]]
) -> None:
    database = f"sqlite:///{tmp_path / 'feedback.db'}"
    six = [path for label in LABELS for path in [p for lb, p in labelled_files if lb == label][:2]]
    command = serve_command("--feedback-allow-anonymous", "--feedback-database-url", database)
    server = ServeProcess(command, tmp_path / "serve.log").start()
    try:
        with httpx.Client(base_url=server.base_url, timeout=60) as client:
            served = client.get("/version").json()["model"]["sha256"]
            answers = client.post(
                "/predict", files=[("files", (path.name, path.read_bytes())) for path in six]
            ).json()
            predicted = [answer["prediction"] for answer in answers]
            # Four answers confirmed, two corrected to another label (people disagreeing with the model).
            given = list(predicted)
            for n in (1, 4):
                given[n] = LABELS[(LABELS.index(predicted[n]) + 1) % 3]
            for path, shown, label in zip(six, predicted, given, strict=True):
                response = client.post(
                    "/feedback",
                    files={"file": (path.name, path.read_bytes())},
                    data={"label": label, "predicted": shown, "model_sha256": served},
                )
                assert response.status_code == 201, response.text
            metrics = client.get("/metrics").text
    finally:
        server.stop()
    assert f'cdo_feedback_accuracy{{model_sha256="{served}"}} 0.6666666666666666' in metrics

    export = tmp_path / "export"
    printed = cli("feedback", "export", "--database", database, "--out", str(export))
    assert "wrote 6 images" in printed
    exported = json.loads((export / "annotations.json").read_text())
    by_name = {entry["fileName"]: entry["annotation"]["label"] for entry in exported["annotations"]}
    assert sorted(by_name.values()) == sorted(label.lower() for label in given)
    assert len(list(export.glob("images/*/*.png"))) == 6

    model = tmp_path / "model"
    cli("train", "--data", str(dataset_dir), "--data", str(export), "--out", str(model), "--folds", "3")
    card = ModelCard.load(model / "model.json")
    datasets = card.training["datasets"]
    assert [d["data_dir"] for d in datasets] == [str(dataset_dir), str(export)]
    assert datasets[0]["data_sha256"] == dataset_sha256(find_images(dataset_dir, LABELS))
    assert datasets[0]["images"] == 139
    assert datasets[1]["data_sha256"] == dataset_sha256(
        find_images(export / "images", LABELS, every_label=False)
    )
    assert datasets[1]["images"] == 6
    # Every image either trained on (and cross-validated) or held out for evaluate and promote.
    assert card.metrics["validation"]["images"] + card.training["evaluation_split"]["images"] == 145

    new = ServeProcess(serve_command("--model-uri", str(model)), tmp_path / "serve-new.log").start()
    try:
        with httpx.Client(base_url=new.base_url, timeout=60) as client:
            assert client.get("/version").json()["model"]["sha256"] == file_sha256(model / "model.onnx")
            answer = client.post("/upload", files={"file": (six[0].name, six[0].read_bytes())})
            assert answer.status_code == 200
            assert answer.json()["prediction"] in LABELS
    finally:
        new.stop()
