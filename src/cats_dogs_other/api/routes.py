"""The HTTP routes: the course's contract (`/health`, `/upload`) and what a production service adds."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, HTTPException, Request, Response

from cats_dogs_other import __version__
from cats_dogs_other.api.dependencies import (
    RETRY_AFTER_SECONDS,
    Engine,
    PredictionToken,
    State,
    not_serving,
)
from cats_dogs_other.api.multipart import read_file_parts
from cats_dogs_other.api.openapi import multipart_body, problem_responses
from cats_dogs_other.api.pipeline import PredictionProtocol, run_prediction
from cats_dogs_other.api.problems import problem_for
from cats_dogs_other.api.schemas import (
    AuthInfo,
    FileFailure,
    FilePrediction,
    Health,
    ModelInfo,
    PredictionResponse,
    Readiness,
    VersionInfo,
)
from cats_dogs_other.api.state import Phase
from cats_dogs_other.inference.decode import InvalidImageError
from cats_dogs_other.inference.service import Outcome
from cats_dogs_other.settings import Settings

FileNames = list[str | None]


class UploadProtocol(PredictionProtocol[None, PredictionResponse]):
    """The course's `/upload`: one part `file`, the course's answer, a bad image is the request's error."""

    fail_fast = True

    async def read(self, request: Request, settings: Settings) -> tuple[Sequence[bytes], None]:
        files = await read_file_parts(request, "file", settings.max_files_per_request)
        if len(files) > 1:
            raise HTTPException(
                400, f"Send one part named 'file' (got {len(files)}); POST /predict takes several."
            )
        return [files[0][1]], None

    def answer(self, context: None, outcomes: list[Outcome]) -> PredictionResponse:
        (outcome,) = outcomes
        if isinstance(outcome, InvalidImageError):  # fail_fast raised it already; narrows the type
            raise outcome
        return PredictionResponse(prediction=outcome.prediction, values=outcome.values)


class PredictFilesProtocol(PredictionProtocol[FileNames, list[FilePrediction | FileFailure]]):
    """`/predict`: parts named `files`; each file gets its prediction or its own problem, in order."""

    async def read(self, request: Request, settings: Settings) -> tuple[Sequence[bytes], FileNames]:
        files = await read_file_parts(request, "files", settings.max_files_per_request)
        return [data for _, data in files], [name for name, _ in files]

    def answer(self, context: FileNames, outcomes: list[Outcome]) -> list[FilePrediction | FileFailure]:
        return [
            FileFailure(filename=name, error=problem_for(outcome).details())
            if isinstance(outcome, InvalidImageError)
            else FilePrediction(filename=name, prediction=outcome.prediction, values=outcome.values)
            for name, outcome in zip(context, outcomes, strict=True)
        ]


UPLOAD = UploadProtocol()
PREDICT_FILES = PredictFilesProtocol()
router = APIRouter()


@router.get("/health", tags=["health"], summary="Liveness: the process answers", response_model=Health)
async def health() -> Health:
    """Always `{"status": "OK"}` while the process runs, even while predictions are busy (liveness probe)."""
    return Health()


@router.get(
    "/ready",
    tags=["health"],
    summary="Readiness: the model is loaded and warmed up",
    response_model=Readiness,
    responses=problem_responses(503),
)
async def ready(state: State) -> Readiness:
    """200 once the model is loaded and has run once; 503 before that and from SIGTERM on."""
    if state.phase is Phase.DRAINING:
        raise HTTPException(503, "The service is shutting down.", {"Retry-After": RETRY_AFTER_SECONDS})
    if state.phase is not Phase.READY:
        raise not_serving(state)
    return Readiness()


@router.get(
    "/version",
    tags=["health"],
    summary="Versions of the service and its model",
    response_model=VersionInfo,
    responses=problem_responses(503),
)
async def version(state: State) -> VersionInfo:
    """The package version, the served model (name, source, hash, labels, input size) and the auth mode."""
    if state.model is None:
        raise HTTPException(503, "The model is not loaded yet.", {"Retry-After": RETRY_AFTER_SECONDS})
    classifier, source = state.model.classifier, state.model.source
    spec = classifier.card.preprocessing
    settings = state.settings
    return VersionInfo(
        version=__version__,
        model=ModelInfo(
            name=classifier.name,
            source=source.display_uri,
            registry_version=source.details.get("version"),
            run_id=source.details.get("run_id") or None,
            sha256=classifier.sha256,
            labels=classifier.labels,
            input_size=(spec.height, spec.width),
            outputs_are_probabilities=classifier.card.outputs_are_probabilities,
        ),
        auth=AuthInfo(mode="disabled")
        if settings.auth_disabled
        else AuthInfo(
            mode="oauth2",
            issuer=settings.oauth2_issuer,
            audience=settings.oauth2_audience,
            required_scope=settings.oauth2_required_scope,
        ),
    )


@router.get(
    "/metrics",
    tags=["health"],
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition format."}},
)
async def metrics(state: State) -> Response:
    """Requests and latency by route and status, batch sizes, queue wait and depth, model latency, auth
    failures by reason, and the served model. Not behind auth: restrict it at the network level."""
    return Response(state.metrics.render(), media_type=state.metrics.content_type)


@router.post(
    "/upload",
    tags=["inference"],
    summary="Classify one image (the course's route)",
    response_model=PredictionResponse,
    responses=problem_responses(400, 401, 403, 413, 415, 422, 503),
    dependencies=[PredictionToken],
    openapi_extra=multipart_body("file", "The image: JPEG, PNG, WebP, GIF, BMP or TIFF.", many=False),
)
async def upload(request: Request, engine: Engine, state: State) -> PredictionResponse:
    """Send one image as the multipart part `file`; get the winning label and the value of each label."""
    return await run_prediction(UPLOAD, request, engine, state.settings)


@router.post(
    "/predict",
    tags=["inference"],
    summary="Classify several images in one request",
    response_model=list[FilePrediction | FileFailure],
    response_model_exclude_none=True,
    responses=problem_responses(400, 401, 403, 413, 415, 422, 503),
    dependencies=[PredictionToken],
    openapi_extra=multipart_body("files", "One or more images, each as a part named `files`.", many=True),
)
async def predict(request: Request, engine: Engine, state: State) -> list[FilePrediction | FileFailure]:
    """Results come in the order of the parts, each with its file name. A file that is not a valid image gets
    an `error` (a problem details object) in its place; the other files are still classified."""
    return await run_prediction(PREDICT_FILES, request, engine, state.settings)
