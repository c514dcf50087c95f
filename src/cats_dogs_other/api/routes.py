"""The HTTP routes: the course's contract (`/health`, `/upload`) and what a production service adds."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response

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
    DocumentImageFailure,
    DocumentImagePrediction,
    DocumentPrediction,
    FeedbackInfo,
    FileFailure,
    FilePrediction,
    Health,
    ImagePosition,
    ModelInfo,
    PredictionResponse,
    Readiness,
    VersionInfo,
)
from cats_dogs_other.api.state import Phase
from cats_dogs_other.inference.decode import SUPPORTED_FORMATS_TEXT, InvalidImageError
from cats_dogs_other.inference.documents import is_pdf
from cats_dogs_other.inference.files import (
    DocumentImageOutcome,
    DocumentOutcome,
    FileOutcome,
    ImageFileOutcome,
    RefusedFile,
    SentFile,
)
from cats_dogs_other.settings import Settings

FileAnswer = FilePrediction | DocumentPrediction | FileFailure
PDF_ON_UPLOAD = (
    "This is a PDF document; POST /upload takes one image. Send PDFs to POST /predict (parts named "
    "'files'): it answers for every image in them."
)


class UploadProtocol(PredictionProtocol[None, PredictionResponse]):
    """The course's `/upload`: one part `file`, the course's answer, a bad image is the request's error."""

    fail_fast = True

    async def read(self, request: Request, settings: Settings) -> tuple[Sequence[SentFile], None]:
        files = await read_file_parts(request, "file", settings.max_files_per_request)
        if len(files) > 1:
            raise HTTPException(
                400, f"Send one part named 'file' (got {len(files)}); POST /predict takes several."
            )
        name, data = files[0]
        if is_pdf(data):
            raise HTTPException(415, PDF_ON_UPLOAD)
        return [SentFile(name, data)], None

    def answer(self, context: None, outcomes: list[FileOutcome]) -> PredictionResponse:
        (file,) = outcomes
        assert isinstance(file, ImageFileOutcome), "no documents on /upload"
        if isinstance(file.outcome, InvalidImageError):  # fail_fast raised it already; narrows the type
            raise file.outcome
        return PredictionResponse(prediction=file.outcome.prediction, values=file.outcome.values)


class PredictFilesProtocol(PredictionProtocol[None, list[FileAnswer]]):
    """`/predict`: parts named `files`, images or PDFs; each file gets its answer or its own problem, in
    order. A PDF's images join the request's images on their way to the model (batched with them)."""

    documents = True

    async def read(self, request: Request, settings: Settings) -> tuple[Sequence[SentFile], None]:
        files = await read_file_parts(request, "files", settings.max_files_per_request)
        return [SentFile(name, data) for name, data in files], None

    def answer(self, context: None, outcomes: list[FileOutcome]) -> list[FileAnswer]:
        return [_file_answer(file) for file in outcomes]


def _file_answer(file: FileOutcome) -> FileAnswer:
    if isinstance(file, RefusedFile):
        return FileFailure(filename=file.name, error=problem_for(file.error).details())
    if isinstance(file, DocumentOutcome):
        images = [_image_answer(image) for image in file.images]
        return DocumentPrediction(filename=file.name, pages=file.pages, images=images)
    if isinstance(file.outcome, InvalidImageError):
        return FileFailure(filename=file.name, error=problem_for(file.outcome).details())
    return FilePrediction(
        filename=file.name,
        prediction=file.outcome.prediction,
        values=file.outcome.values,
        thumbnail=_data_url(file.outcome.thumbnail),
    )


def _image_answer(image: DocumentImageOutcome) -> DocumentImagePrediction | DocumentImageFailure:
    """A document image's entry; a copy says whose (`duplicate_of`) when its original was classified."""
    where = {
        "page": image.position.page,
        "index": image.position.index,
        "width": image.width,
        "height": image.height,
    }
    outcome = image.outcome
    if isinstance(outcome, InvalidImageError):
        return DocumentImageFailure(**where, error=problem_for(outcome).details())
    original = image.duplicate_of
    return DocumentImagePrediction(
        **where,
        prediction=outcome.prediction,
        values=outcome.values,
        thumbnail=_data_url(outcome.thumbnail),
        duplicate_of=None if original is None else ImagePosition(page=original.page, index=original.index),
    )


def _data_url(jpeg: bytes | None) -> str | None:
    return None if jpeg is None else "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


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
            runtime=classifier.runtime,
        ),
        auth=AuthInfo(mode="disabled")
        if settings.auth_disabled
        else AuthInfo(
            mode="oauth2",
            issuer=settings.oauth2_issuer,
            audience=settings.oauth2_audience,
            required_scope=settings.oauth2_required_scope,
            client_id=settings.oauth2_client_id,
            audience_parameter=settings.oauth2_audience_parameter,
        ),
        feedback=FeedbackInfo(
            # With auth off, feedback is anonymous, and taken only if the operator allows it.
            enabled=state.feedback is not None
            and (not settings.auth_disabled or settings.feedback_allow_anonymous),
            required_scope=None if settings.auth_disabled else settings.feedback_required_scope,
            retention_days=settings.feedback_retention_days or None,
            daily_quota=settings.feedback_daily_quota or None,
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
    openapi_extra=multipart_body("file", f"The image: {SUPPORTED_FORMATS_TEXT}.", many=False),
)
async def upload(request: Request, engine: Engine, state: State) -> PredictionResponse:
    """Send one image as the multipart part `file`; get the winning label and the value of each label."""
    return await run_prediction(UPLOAD, request, engine, state.settings)


@router.post(
    "/predict",
    tags=["inference"],
    summary="Classify several images, or the images in PDF documents, in one request",
    response_model=list[FilePrediction | DocumentPrediction | FileFailure],
    response_model_exclude_none=True,
    responses=problem_responses(400, 401, 403, 413, 415, 422, 503),
    dependencies=[PredictionToken],
    openapi_extra=multipart_body(
        "files", "One or more images or PDF documents, each as a part named `files`.", many=True
    ),
)
async def predict(
    request: Request,
    engine: Engine,
    state: State,
    thumbnails: Annotated[
        bool,
        Query(description="Add each image's `thumbnail` (what the model saw, 128 px, JPEG data URL)."),
    ] = False,
) -> list[FileAnswer]:
    """Results come in the order of the parts, each with its file name. An image gets its prediction; a
    PDF gets its page count and one entry per embedded image (`page`, `index` counted from 0, `width`,
    `height`, the prediction, and `duplicate_of` for a repeated image). A file that cannot be read gets
    an `error` (a problem details object) in its place; the other files are still classified."""
    return await run_prediction(PREDICT_FILES, request, engine, state.settings, thumbnails=thumbnails)
