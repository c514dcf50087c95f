"""Where a model comes from: a local file or folder, or the MLflow registry (`models:/`, `runs:/`).

Registry models are downloaded once into a local cache at start (keyed by the resolved version, so an
alias that moves to a new version downloads that version), then served from disk like any file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cats_dogs_other.models.card import ModelCard, card_path_for, default_model_path
from cats_dogs_other.models.errors import ModelLoadError
from cats_dogs_other.urls import redact_credentials

log = logging.getLogger(__name__)

MODEL_SUFFIXES = {".onnx": "onnx", ".keras": "keras", ".h5": "keras"}
# Inside a folder (an MLflow model, a training output), in this order.
FOLDER_CANDIDATES = ("model.onnx", "data/model.keras", "data/model.h5", "model.keras", "model.h5")
REGISTRY_SCHEMES = ("models:/", "runs:/")


@dataclass(frozen=True)
class ModelSource:
    uri: str
    path: Path
    kind: Literal["onnx", "keras"]
    card: ModelCard | None = None
    details: dict[str, str] = field(default_factory=dict)

    @property
    def display_uri(self) -> str:
        """The URI with any user:password@ replaced, for logs, /version and metrics."""
        return redact_credentials(self.uri)

    def describe(self) -> str:
        extra = ", ".join(f"{k} {v}" for k, v in self.details.items())
        return f"{self.display_uri} ({extra})" if extra else self.display_uri


@dataclass(frozen=True)
class MlflowRegistry:
    """How to reach the MLflow registry, from `Settings` (MLFLOW_TRACKING_URI and MLflow's own knobs)."""

    tracking_uri: str | None
    request_max_retries: int
    request_timeout_seconds: int

    @contextmanager
    def client_environment(self) -> Iterator[None]:
        """MLflow's HTTP client reads its retries and timeout only from the environment: set them for
        the fetch, then put back what was there."""
        wanted = {
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(self.request_max_retries),
            "MLFLOW_HTTP_REQUEST_TIMEOUT": str(self.request_timeout_seconds),
        }
        saved = {name: os.environ.get(name) for name in wanted}
        os.environ.update(wanted)
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cats-dogs-other" / "models"


def resolve_model(
    uri: str | Path | None, cache_dir: Path | None = None, registry: MlflowRegistry | None = None
) -> ModelSource:
    """A model URI to a local model file, its kind and its card (if one ships with it)."""
    if uri is None or str(uri) == "":
        path = default_model_path()
        return ModelSource("builtin:default", path, "onnx", _card_beside(path))
    text = str(uri)
    if text.startswith(REGISTRY_SCHEMES):
        return _from_registry(text, cache_dir or default_cache_dir(), registry)
    if "://" in text or (":" in text.split("/")[0] and not Path(text).exists()):
        raise ModelLoadError(
            f"Unknown model URI scheme in {redact_credentials(text)!r}: use a path to an .onnx, .keras or "
            ".h5 file (or a folder holding one), or an MLflow URI models:/NAME/VERSION, models:/NAME@ALIAS "
            "or runs:/RUN_ID/PATH."
        )
    return _from_path(Path(text), text)


def _from_path(path: Path, uri: str, details: dict[str, str] | None = None) -> ModelSource:
    if path.is_dir():
        found = next((path / c for c in FOLDER_CANDIDATES if (path / c).is_file()), None)
        if found is None:
            raise ModelLoadError(f"No model file in {path}: expected one of {', '.join(FOLDER_CANDIDATES)}.")
        path = found
    if not path.is_file():
        raise ModelLoadError(f"Model file not found: {path}. Pass --model with a path or a models:/ URI.")
    kind = MODEL_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ModelLoadError(f"{path} is not a model file this service reads (.onnx, .keras or .h5).")
    return ModelSource(uri, path, kind, _card_beside(path), details or {})  # type: ignore[arg-type]


def _card_beside(path: Path) -> ModelCard | None:
    card_file = card_path_for(path)
    if not card_file.is_file():
        return None
    try:
        return ModelCard.load(card_file)
    except ValueError as exc:
        raise ModelLoadError(f"Model card {card_file} is not valid: {exc}") from exc


def _from_registry(uri: str, cache_dir: Path, registry: MlflowRegistry | None) -> ModelSource:
    tracking = registry.tracking_uri if registry is not None else None
    if registry is None or not tracking:
        raise ModelLoadError(f"{uri} needs MLFLOW_TRACKING_URI: set it to your MLflow tracking server's URL.")
    try:
        import mlflow
        from mlflow import MlflowClient
    except ImportError as exc:
        raise ModelLoadError(
            "Serving from the MLflow registry needs the `mlflow` extra: "
            "pip install 'cats-dogs-other[mlflow]'."
        ) from exc
    try:
        with registry.client_environment():  # fail fast when the server is down, not minutes of retries
            return _download(uri, tracking, cache_dir, mlflow, MlflowClient(tracking_uri=tracking))
    except ModelLoadError:
        raise
    except Exception as exc:  # MLflow raises many types (connection, REST, missing artifact)
        # A tracking URI may carry credentials (https://user:token@host): never in a message or a log.
        message = f"Cannot fetch {uri} from the MLflow server at {tracking}: {_short(exc)}"
        raise ModelLoadError(redact_credentials(message)) from None


def _download(uri: str, tracking: str, cache_dir: Path, mlflow: Any, client: Any) -> ModelSource:
    """Into the cache once per resolved version; a finished download is marked `.complete`."""
    details = _registry_details(client, uri)
    key = hashlib.sha256(f"{tracking}|{uri}|{sorted(details.items())}".encode()).hexdigest()[:24]
    target = cache_dir / key
    if not (target / ".complete").is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".download-"))
        downloaded = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=str(scratch), tracking_uri=tracking
            )
        )
        shutil.rmtree(target, ignore_errors=True)
        downloaded.rename(target)
        shutil.rmtree(scratch, ignore_errors=True)
        (target / ".complete").touch()
        log.info("downloaded %s into %s", uri, target)
    else:
        log.info("using the cached download of %s", uri)
    return _from_path(target, uri, details)


def alias_target(uri: str, registry: MlflowRegistry) -> str:
    """The version `models:/NAME@ALIAS` points to now: one small registry request, no download.
    ModelLoadError when the registry cannot say."""
    if not uri.startswith("models:/") or "@" not in uri:
        raise ModelLoadError(f"{redact_credentials(uri)} is not an alias URI (models:/NAME@ALIAS)")
    if not registry.tracking_uri:
        raise ModelLoadError(f"{uri} needs MLFLOW_TRACKING_URI: set it to your MLflow tracking server's URL.")
    import requests
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        with registry.client_environment():
            return _registry_details(MlflowClient(tracking_uri=registry.tracking_uri), uri)["version"]
    except (MlflowException, requests.RequestException) as exc:  # the registry's answer, or no answer:
        # anything else is our bug, and the follower logs its traceback
        message = f"Cannot look up {uri} at {registry.tracking_uri}: {_short(exc)}"
        raise ModelLoadError(redact_credentials(message)) from None


def pinned(uri: str, version: str) -> str:
    """`models:/NAME@ALIAS` as the URI of one of its versions, `models:/NAME/VERSION`."""
    name = uri.removeprefix("models:/").split("@", 1)[0]
    return f"models:/{name}/{version}"


def _registry_details(client: object, uri: str) -> dict[str, str]:
    """The concrete version behind `models:/NAME@ALIAS` or `models:/NAME/VERSION`, or the run id."""
    if uri.startswith("runs:/"):
        return {"run_id": uri.removeprefix("runs:/").split("/", 1)[0]}
    spec = uri.removeprefix("models:/")
    if "@" in spec:
        name, alias = spec.split("@", 1)
        version = client.get_model_version_by_alias(name, alias)  # type: ignore[attr-defined]
    else:
        name, _, number = spec.partition("/")
        version = client.get_model_version(name, number)  # type: ignore[attr-defined]
    return {"version": str(version.version), "run_id": str(version.run_id or "")}


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]
