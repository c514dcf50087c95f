"""`cats-dogs-other promote`: the gate's rules on reports, then the command against a real MLflow
server: the alias moves only when the gate passes or a person forces it with a reason, and the version
keeps what was decided."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from cats_dogs_other.models.card import ModelCard, default_model_path
from cats_dogs_other.training.promotion import judge
from tests.registry import cli, register


def report(
    candidate: dict[str, float], champion: dict[str, float] | None, images: int = 50
) -> dict[str, Any]:
    def model(accuracy: dict[str, float]) -> dict[str, Any]:
        return {
            "trained_without_these_images": True,
            "variants": {name: {"accuracy": value} for name, value in accuracy.items()},
        }

    models = {"candidate": model(candidate)}
    if champion is not None:
        models["champion"] = model(champion)
    return {"images": images, "models": models}


def test_the_gate_compares_every_variant_with_the_champion() -> None:
    same = {"colour": 0.96, "grayscale": 0.9}
    assert judge(report(same, same), 2.0).passed
    assert judge(report({"colour": 0.98, "grayscale": 0.95}, same), 2.0).passed  # better
    # 2 points worse on one variant (1 image of 50) is within the tolerance; 4 points is not.
    assert judge(report({"colour": 0.96, "grayscale": 0.88}, same), 2.0).passed
    refused = judge(report({"colour": 0.96, "grayscale": 0.86}, same), 2.0)
    assert not refused.passed
    assert len(refused.refusals) == 1
    assert refused.refusals[0].startswith("grayscale: accuracy 86.0% against the champion's 90.0%")
    # Better overall does not buy a worse variant.
    assert not judge(report({"colour": 1.0, "grayscale": 0.8}, same), 2.0).passed
    # A first promotion has nothing to compare with.
    assert judge(report({"colour": 0.5}, None), 2.0).passed


def test_one_image_is_never_a_regression() -> None:
    """On 34 images one image is 2.9 points: above a 2-point tolerance, and noise. Two images are not."""
    champion = {"colour": 1.0}
    one = judge(report({"colour": 33 / 34}, champion, images=34), 2.0)
    assert one.passed
    assert one.allowed_points == pytest.approx(100 / 34, abs=0.01)
    assert not judge(report({"colour": 32 / 34}, champion, images=34), 2.0).passed
    # On a large set the tolerance is what applies.
    assert not judge(report({"colour": 0.97}, champion, images=1000), 2.0).passed


def test_a_candidate_must_have_been_trained_without_the_evaluation_set() -> None:
    decision = report({"colour": 1.0}, None)
    decision["models"]["candidate"]["trained_without_these_images"] = False
    refused = judge(decision, 2.0)
    assert not refused.passed
    assert "does not record that its training held out" in refused.refusals[0]
    assert not judge(report({"colour": 1.0}, None, images=0), 2.0).passed


@pytest.fixture
def course_data(dataset_dir: Path) -> Path:
    return dataset_dir.parent  # the dataset's root: images/ beside annotations.json, as train reads it


@pytest.mark.slow
def test_promote_moves_the_alias_only_past_the_gate(
    mlflow_server: str, course_data: Path, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    cache = tmp_path / "cache"
    name = "promote-cli"
    shipped = default_model_path().parent
    # A model from before the split: the shipped one with a card that does not record it.
    unsplit = tmp_path / "unsplit"
    shutil.copytree(shipped, unsplit)
    card = ModelCard.load(unsplit / "model.json")
    card.training.pop("evaluation_split")
    card.save(unsplit / "model.json")
    first, second = (register(mlflow_server, folder, name) for folder in (shipped, unsplit))
    client = MlflowClient(mlflow_server)
    judged = ["--data", str(course_data), "--variants", "colour", "grayscale"]

    done = cli(mlflow_server, cache, "promote", name, first, *judged, "--out", str(tmp_path / "1"))
    assert done.returncode == 0, done.stderr
    assert f"models:/{name}@champion -> version {first} (passed the gate; it was no version)" in done.stdout
    tags = client.get_model_version(name, first).tags
    assert tags["gate.champion"] == "passed"
    assert tags["gate.champion.against_version"] == "none"
    report_json = json.loads((tmp_path / "1" / "evaluation.json").read_text())
    assert (
        tags["evaluation.colour.accuracy"]
        == f"{report_json['models']['candidate']['variants']['colour']['accuracy']:.4f}"
    )
    assert report_json["gate"]["passed"] is True

    done = cli(mlflow_server, cache, "promote", name, second, *judged, "--out", str(tmp_path / "2"))
    assert done.returncode == 1
    assert "does not record that its training held out" in done.stdout
    assert f"refused: models:/{name}@champion stays at version {first}" in done.stderr
    assert client.get_model_version_by_alias(name, "champion").version == first
    version = client.get_model_version(name, second)
    assert version.tags["gate.champion"] == "refused"
    assert version.description.startswith("Gate for @champion: refused")
    assert "| colour |" in version.description

    done = cli(mlflow_server, cache, "promote", name, second, *judged, "--force")
    assert done.returncode == 2
    assert "--force needs --reason" in done.stderr
    reason = "trained before the split existed; checked by hand"
    done = cli(
        *[mlflow_server, cache, "promote", name, second, *judged, "--out", str(tmp_path / "3")],
        *["--force", "--reason", reason],
    )
    assert done.returncode == 0, done.stderr
    assert "forced past the gate" in done.stdout
    assert client.get_model_version_by_alias(name, "champion").version == second
    tags = client.get_model_version(name, second).tags
    assert tags["gate.champion"] == "forced"
    assert tags["gate.champion.forced_reason"] == reason

    # Rolling back is promoting the version before: judged against the one serving now.
    done = cli(mlflow_server, cache, "promote", name, first, *judged, "--out", str(tmp_path / "4"))
    assert done.returncode == 0, done.stderr
    assert f"-> version {first} (passed the gate; it was version {second})" in done.stdout
    assert client.get_model_version(name, first).tags["gate.champion.against_version"] == second
    # The evaluation went on the candidate's own run, as `evaluate` logs it.
    run_id = client.get_model_version(name, first).run_id
    assert "evaluation_colour_accuracy" in client.get_run(run_id).data.metrics
    done = cli(mlflow_server, cache, "promote", name, first, *judged)
    assert done.stdout.strip().endswith(f"models:/{name}@champion is already version {first}")
    # An emergency: forced without evaluating (no --data). Recorded as such.
    done = cli(mlflow_server, cache, "promote", name, second, "--force", "--reason", "incident 42")
    assert done.returncode == 0, done.stderr
    assert "gate: not evaluated: forced without --data" in done.stdout
    assert client.get_model_version_by_alias(name, "champion").version == second
    version = client.get_model_version(name, second)
    assert version.tags["gate.champion.forced_reason"] == "incident 42"
    assert version.description.startswith("Gate for @champion: forced (incident 42)")
