"""Training runs in MLflow, as the course tracks them: parameters, metrics, the card and the model."""

from __future__ import annotations

from typing import Any

from cats_dogs_other.training.train import TrainConfig, TrainResult


def log_to_mlflow(result: TrainResult, config: TrainConfig, register_as: str | None = None) -> str:
    """Log one training run (to MLFLOW_TRACKING_URI) and optionally register it; returns the model's URI.

    The model is logged as plain artifacts under `model/` (model.onnx + model.json), which is what
    `serve --model runs:/RUN_ID/model` or `models:/NAME/VERSION` reads back.
    """
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    validation: dict[str, Any] = result.card.metrics["validation"]
    with mlflow.start_run() as run:
        mlflow.log_params(
            {
                "folds": config.folds,
                "weight_decay": config.weight_decay,
                "seed": config.seed,
                "quantize": config.quantize,
                "data_sha256": result.card.training["data_sha256"],
            }
        )
        mlflow.log_metric("validation_accuracy", validation["accuracy"])
        for label, numbers in validation["per_class"].items():
            mlflow.log_metric(f"recall_{label.lower()}", numbers["recall"] or 0.0)
        mlflow.log_artifact(str(result.model_path), artifact_path="model")
        mlflow.log_artifact(str(result.model_path.with_name("model.json")), artifact_path="model")
        uri = f"runs:/{run.info.run_id}/model"
        artifacts = f"{run.info.artifact_uri}/model"
    if register_as:
        # A version whose source is the run's `model/` folder: MLflow 3's register_model() insists on a
        # "logged model" (a flavor), which a plain ONNX file and its card are not.
        client = MlflowClient()
        try:
            client.create_registered_model(register_as)
        except MlflowException as exc:
            if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
                raise
        version = client.create_model_version(register_as, artifacts, run_id=run.info.run_id)
        return f"models:/{register_as}/{version.version}"
    return uri
