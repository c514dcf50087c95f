"""Putting a model folder (model.onnx + model.json) into a real MLflow registry, as `train --register`
does, and running the CLI against it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def register(tracking_uri: str, folder: Path, name: str) -> str:
    """Log `folder`'s model.onnx and model.json in a run under `model/`, register that as a new version
    of `name`; the version number."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(folder / "model.onnx"), artifact_path="model")
        mlflow.log_artifact(str(folder / "model.json"), artifact_path="model")
    client = MlflowClient(tracking_uri)
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
            raise
    version = client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    return str(version.version)


def cli(tracking_uri: str, cache: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`cats-dogs-other ARGS` with the registry set, as a person runs it."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "XDG_CACHE_HOME": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "cats_dogs_other.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
