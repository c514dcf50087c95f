"""The HTTP routes: the course's contract (`/health`, `/upload`) and what a production service adds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from starlette.datastructures import UploadFile

from cats_dogs_other import __version__
from cats_dogs_other.api.problems import PROBLEM_MEDIA_TYPE, ProblemDetails, image_error_status
from cats_dogs_other.api.runtime import Runtime, get_runtime
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
from cats_dogs_other.auth.dependency import require_prediction_token
from cats_dogs_other.inference.decode import InvalidImageError
from cats_dogs_other.inference.service import InferenceService

RETRY_AFTER_SECONDS = "5"

_PROBLEM_DESCRIPTIONS = {
    400: "Malformed request (a broken multipart body, too many files), or (v2) a model that is not ready.",
    401: "No bearer token, or a token that is not valid (expired, wrong issuer or audience, bad signature).",
    403: "A valid token without the required scope (get::prediction by default).",
    404: "No model by that name.",
    413: "The request body is over MAX_UPLOAD_BYTES, or the image has more pixels than MAX_PIXELS.",
    415: "Not multipart/form-data, or the file is not a supported image (or is corrupt or empty).",
    422: "A required form part is missing or misnamed.",
    500: "The server failed; the body carries a request id to quote.",
    503: "The model is not loaded yet, the service is shutting down, or the identity provider's keys are "
    "unavailable; retry after `Retry-After` seconds.",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for error statuses, all with the problem+json body."""
    return {
        status: {
            "model": ProblemDetails,
            "description": _PROBLEM_DESCRIPTIONS[status],
            "content": {PROBLEM_MEDIA_TYPE: {}},
        }
        for status in statuses
    }


def ready_inference(runtime: Annotated[Runtime, Depends(get_runtime)]) -> InferenceService:
    """The inference service, or 503 with Retry-After while the model loads or the service stops."""
    if runtime.inference is None or not runtime.ready or runtime.stopping:
        state = "shutting down" if runtime.stopping else "loading its model"
        raise HTTPException(
            503, f"The service is {state}; retry shortly.", {"Retry-After": RETRY_AFTER_SECONDS}
        )
    return runtime.inference


async def admitted_inference(
    inference: Annotated[InferenceService, Depends(ready_inference)],
) -> AsyncIterator[InferenceService]:
    """Admission control, before the body is read: past QUEUE_MAX requests in flight, 503 at once."""
    with inference.admission():
        yield inference


Inference = Annotated[InferenceService, Depends(admitted_inference)]


def _multipart_is_complete(request: Request) -> bool:
    """Whether the body ended with its closing delimiter: python-multipart drops a truncated last part
    silently, so this is how a truncated upload is told from one that lacks the expected part."""
    boundary = (
        request.headers.get("content-type", "").partition("boundary=")[2].split(";")[0].strip().strip('"')
    )
    tail: bytes = request.scope.get("state", {}).get("body_tail", b"")
    return bool(boundary) and tail.rstrip(b"\r\n").endswith(b"--" + boundary.encode() + b"--")


def multipart_body(field: str, description: str, many: bool) -> dict[str, Any]:
    """The request body as OpenAPI sees it (the route reads it itself, after the token check)."""
    binary = {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream"}
    schema = {"type": "array", "items": binary, "minItems": 1} if many else binary
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": [field],
                        "properties": {field: {**schema, "description": description}},
                    }
                }
            },
        }
    }


async def read_file_parts(request: Request, field: str, max_files: int) -> list[tuple[str | None, bytes]]:
    """The files sent under `field`, read only after authentication; clear 4xx for every malformed body."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        shown = content_type.split(";")[0].strip() or "no Content-Type"
        raise HTTPException(
            415, f"Expected multipart/form-data with the image in a part named '{field}', got {shown}."
        )
    form = await request.form(max_files=max_files, max_fields=16)
    try:
        values = form.getlist(field)
        files = [value for value in values if isinstance(value, UploadFile)]
        if not files:
            if not _multipart_is_complete(request):
                raise HTTPException(
                    400,
                    "The multipart body is incomplete: it is truncated, or its boundary does not match "
                    "the one in Content-Type.",
                )
            if values:
                raise HTTPException(
                    422, f"The part '{field}' is a text field; send the image as a file part."
                )
            sent = ", ".join(sorted({f"'{name}'" for name in form})) or "none"
            raise HTTPException(
                422,
                f"Missing form part '{field}' (parts sent: {sent}). "
                f"Send the image as a multipart file part named '{field}'.",
            )
        return [(upload.filename, await upload.read()) for upload in files]
    finally:
        await form.close()


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
async def ready(runtime: Annotated[Runtime, Depends(get_runtime)]) -> Readiness:
    """200 once the model is loaded and has run once; 503 before that and from SIGTERM on."""
    if runtime.draining:
        raise HTTPException(503, "The service is shutting down.", {"Retry-After": RETRY_AFTER_SECONDS})
    ready_inference(runtime)
    return Readiness()


@router.get(
    "/version",
    tags=["health"],
    summary="Versions of the service and its model",
    response_model=VersionInfo,
    responses=problem_responses(503),
)
async def version(runtime: Annotated[Runtime, Depends(get_runtime)]) -> VersionInfo:
    """The package version, the served model (name, source, hash, labels, input size) and the auth mode."""
    classifier = runtime.classifier
    if classifier is None:
        raise HTTPException(503, "The model is not loaded yet.", {"Retry-After": RETRY_AFTER_SECONDS})
    spec = classifier.card.preprocessing
    settings = runtime.settings
    return VersionInfo(
        version=__version__,
        model=ModelInfo(
            name=classifier.name,
            source=runtime.model_source.display_uri if runtime.model_source else "",
            registry_version=runtime.model_source.details.get("version") if runtime.model_source else None,
            run_id=runtime.model_source.details.get("run_id") or None if runtime.model_source else None,
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
async def metrics(runtime: Annotated[Runtime, Depends(get_runtime)]) -> Response:
    """Requests and latency by route and status, batch sizes, queue wait and depth, model latency, auth
    failures by reason, and the served model. Not behind auth: restrict it at the network level."""
    return Response(runtime.metrics.render(), media_type=runtime.metrics.content_type)


@router.post(
    "/upload",
    tags=["inference"],
    summary="Classify one image (the course's route)",
    response_model=PredictionResponse,
    responses=problem_responses(400, 401, 403, 413, 415, 422, 503),
    dependencies=[Depends(require_prediction_token)],
    openapi_extra=multipart_body("file", "The image: JPEG, PNG, WebP, GIF, BMP or TIFF.", many=False),
)
async def upload(request: Request, inference: Inference) -> PredictionResponse:
    """Send one image as the multipart part `file`; get the winning label and the value of each label."""
    files = await read_file_parts(request, "file", get_runtime(request).settings.max_files_per_request)
    if len(files) > 1:
        raise HTTPException(
            400, f"Send one part named 'file' (got {len(files)}); POST /predict takes several."
        )
    ((_, data),) = files
    prediction = await inference.predict(data)
    return PredictionResponse(prediction=prediction.prediction, values=prediction.values)


@router.post(
    "/predict",
    tags=["inference"],
    summary="Classify several images in one request",
    response_model=list[FilePrediction | FileFailure],
    response_model_exclude_none=True,
    responses=problem_responses(400, 401, 403, 413, 415, 422, 503),
    dependencies=[Depends(require_prediction_token)],
    openapi_extra=multipart_body("files", "One or more images, each as a part named `files`.", many=True),
)
async def predict(request: Request, inference: Inference) -> list[FilePrediction | FileFailure]:
    """Results come in the order of the parts, each with its file name. A file that is not a valid image gets
    an `error` (a problem details object) in its place; the other files are still classified."""
    limit = get_runtime(request).settings.max_files_per_request
    files = await read_file_parts(request, "files", max_files=limit)
    results = await inference.predict_each([data for _, data in files])
    answers: list[FilePrediction | FileFailure] = []
    for (filename, _), result in zip(files, results, strict=True):
        if isinstance(result, InvalidImageError):
            status = image_error_status(result)
            error = ProblemDetails(
                title=HTTPStatus(status).phrase, status=status, detail=str(result), code=result.kind.value
            )
            answers.append(FileFailure(filename=filename, error=error))
        else:
            answers.append(
                FilePrediction(filename=filename, prediction=result.prediction, values=result.values)
            )
    return answers
