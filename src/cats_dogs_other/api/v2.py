"""The Open Inference Protocol (KServe v2) over HTTP, for clients and platforms that speak it.

`/v2/models/{name}/infer` takes a BYTES input of encoded images (JSON with base64 strings, or the binary
tensor data extension that `tritonclient` uses by default) and returns the probabilities (FP32
[N, labels]) and the winning labels (BYTES [N]). Images go through the same decoding, batching and model
as `/upload`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import anyio
import numpy as np
from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from cats_dogs_other import __version__
from cats_dogs_other.api.dependencies import Engine, PredictionToken, Served, State
from cats_dogs_other.api.openapi import problem_responses
from cats_dogs_other.api.pipeline import PredictionProtocol, run_prediction
from cats_dogs_other.api.problems import KNOWN_ERRORS, Problem, problem_for
from cats_dogs_other.api.state import Phase, ServedModel, ServiceState
from cats_dogs_other.api.v2_request import (
    HEADER_LENGTH,
    InferenceRequest,
    V2RequestError,
    parse_infer_request,
)
from cats_dogs_other.inference.classifier import Prediction
from cats_dogs_other.inference.decode import InvalidImageError
from cats_dogs_other.inference.files import FileOutcome, ImageFileOutcome, SentFile
from cats_dogs_other.settings import Settings

MODEL_NAME = "cats-dogs-other"
DEFAULT_MODEL_VERSION = "1"


class OpenInferenceError(Exception):
    """Any error of a v2 route, on its way to v2's own handler."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.detail)
        self.problem = problem


class OpenInferenceRoute(APIRoute):
    """Routes whose errors also carry the protocol's `{"error": "..."}`: the same problem as anywhere
    else (`problem_for`), with the protocol's member beside it."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handle_v2(request: Request) -> Response:
            try:
                return await handle(request)
            except KNOWN_ERRORS as exc:
                problem = problem_for(exc, request)
                if isinstance(exc, InvalidImageError) and exc.index is not None:
                    problem = Problem(
                        problem.status, f"Image {exc.index}: {exc}", problem.headers, problem.extensions
                    )
                raise OpenInferenceError(problem) from None

        return handle_v2


async def on_open_inference_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OpenInferenceError)
    return exc.problem.response(request, error=exc.problem.detail)


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.add_exception_handler(OpenInferenceError, on_open_inference_error)


router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"], route_class=OpenInferenceRoute)


def served_version(state: ServiceState) -> str:
    """The registry version of the served model when it has one, else "1"."""
    return model_version(state.model) if state.model is not None else DEFAULT_MODEL_VERSION


def model_version(model: ServedModel) -> str:
    return model.source.details.get("version") or DEFAULT_MODEL_VERSION


def _check_model(state: ServiceState, name: str, version: str | None = None) -> None:
    if name != MODEL_NAME:
        raise HTTPException(404, f"Unknown model {name!r}; this server serves {MODEL_NAME!r}.")
    if version is not None and version != served_version(state):
        raise HTTPException(
            404,
            f"Unknown version {version!r} of {MODEL_NAME!r}; this server serves {served_version(state)!r}.",
        )


def _check_ready(state: ServiceState) -> None:
    if state.phase is not Phase.READY:
        raise HTTPException(400, "The model is not ready.")


class OpenInferenceProtocol(PredictionProtocol[InferenceRequest, Response]):
    """v2 infer: a BYTES input of encoded images in; probabilities and labels out; all or nothing."""

    fail_fast = True

    def __init__(self, version: str) -> None:
        self.version = version  # the model version the answer names

    async def read(self, request: Request, settings: Settings) -> tuple[Sequence[SentFile], InferenceRequest]:
        body = await request.body()
        try:  # counting and validating a 10 MB body takes milliseconds: not on the event loop
            parsed = await anyio.to_thread.run_sync(
                parse_infer_request,
                body,
                request.headers.get(HEADER_LENGTH),
                settings.max_files_per_request,
            )
        except V2RequestError as exc:
            raise HTTPException(400, str(exc)) from None
        return [SentFile(None, image) for image in parsed.images], parsed.request

    def answer(self, context: InferenceRequest, outcomes: list[FileOutcome]) -> Response:
        predictions = [
            file.outcome
            for file in outcomes
            if isinstance(file, ImageFileOutcome) and isinstance(file.outcome, Prediction)
        ]
        assert len(predictions) == len(outcomes), "images only, and fail_fast raised the first bad one"
        scores = np.array([p.values for p in predictions], dtype=np.float32)
        return _response(context, scores, [p.prediction for p in predictions], self.version)


@router.get("/health/live", summary="Liveness (v2)")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready", summary="Readiness (v2)", responses=problem_responses(400))
async def ready(state: State) -> dict[str, bool]:
    _check_ready(state)
    return {"ready": True}


@router.get("", summary="Server metadata (v2)")
async def server_metadata() -> dict[str, Any]:
    return {"name": "cats-dogs-other", "version": __version__, "extensions": ["binary_tensor_data"]}


@router.get("/models/{name}", summary="Model metadata (v2)", responses=problem_responses(404))
async def model_metadata(name: str, state: State) -> dict[str, Any]:
    _check_model(state, name)
    labels = len(state.model.classifier.labels) if state.model else 3
    return {
        "name": MODEL_NAME,
        "versions": [served_version(state)],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, labels]},
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
        ],
    }


@router.get("/models/{name}/ready", summary="Model readiness (v2)", responses=problem_responses(400, 404))
async def model_ready(name: str, state: State) -> dict[str, Any]:
    _check_model(state, name)
    _check_ready(state)
    return {"name": MODEL_NAME, "ready": True}


INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {"inputs": {"type": "array", "minItems": 1}},
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
INFER_RESPONSES = problem_responses(400, 401, 403, 404, 413, 415, 503)


@router.post(
    "/models/{name}/infer",
    summary="Classify encoded images (v2)",
    responses=INFER_RESPONSES,
    dependencies=[PredictionToken],
    openapi_extra=INFER_BODY,
)
async def infer(name: str, request: Request, engine: Engine, state: State, model: Served) -> Response:
    _check_model(state, name)
    return await run_prediction(OpenInferenceProtocol(model_version(model)), request, engine, state.settings)


@router.post(
    "/models/{name}/versions/{version}/infer",
    summary="Classify encoded images with a pinned model version (v2)",
    responses=INFER_RESPONSES,
    dependencies=[PredictionToken],
    openapi_extra=INFER_BODY,
)
async def infer_version(name: str, version: str, request: Request, engine: Engine, state: State) -> Response:
    _check_model(state, name, version)
    return await run_prediction(OpenInferenceProtocol(version), request, engine, state.settings)


def _response(request: InferenceRequest, scores: np.ndarray, labels: list[str], version: str) -> Response:
    wanted = {o.name: o for o in request.outputs or []}
    binary_default = bool(request.parameters and request.parameters.binary_data_output)
    tensors = {
        "probabilities": (
            "FP32",
            list(scores.shape),
            scores.astype("<f4").tobytes(),
            scores.ravel().tolist(),
        ),
        "label": (
            "BYTES",
            [len(labels)],
            b"".join(struct.pack("<I", len(x)) + x.encode() for x in labels),
            labels,
        ),
    }
    outputs, chunks = [], []
    for name, (datatype, shape, raw, values) in tensors.items():
        if wanted and name not in wanted:
            continue
        requested = wanted.get(name)
        chosen = requested.parameters.binary_data if requested and requested.parameters else None
        binary = binary_default if chosen is None else chosen
        output: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
        if binary:
            output["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            output["data"] = values
        outputs.append(output)
    body: dict[str, Any] = {"model_name": MODEL_NAME, "model_version": version, "outputs": outputs}
    if request.id is not None:
        body["id"] = request.id
    if not chunks:
        return JSONResponse(body)
    head = json.dumps(body).encode()
    return Response(
        head + b"".join(chunks),
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(head))},
    )


__all__ = ["MODEL_NAME", "install", "router"]
