"""The Open Inference Protocol (KServe v2) over HTTP, for clients and platforms that speak it.

`/v2/models/{name}/infer` takes a BYTES input of encoded images (JSON with base64 strings, or the binary
tensor data extension that `tritonclient` uses by default) and returns the probabilities (FP32
[N, labels]) and the winning labels (BYTES [N]). Images go through the same decoding, batching and model
as `/upload`.
"""

from __future__ import annotations

import json
import struct
from typing import Annotated, Any

import anyio
import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import JSONResponse

from cats_dogs_other import __version__
from cats_dogs_other.api.problems import PROBLEM_MEDIA_TYPE
from cats_dogs_other.api.routes import Inference, problem_responses
from cats_dogs_other.api.runtime import Runtime, get_runtime
from cats_dogs_other.api.v2_request import (
    HEADER_LENGTH,
    InferenceRequest,
    V2RequestError,
    parse_infer_request,
)
from cats_dogs_other.auth.dependency import require_prediction_token

MODEL_NAME = "cats-dogs-other"
router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"])


def _v2_error(status: int, message: str) -> HTTPException:
    # The protocol's error body is {"error": "..."}; it rides along the problem details as an extension.
    return HTTPException(status, message)


def _model(runtime: Runtime, name: str) -> Runtime:
    if name != MODEL_NAME:
        raise _v2_error(404, f"Unknown model {name!r}; this server serves {MODEL_NAME!r}.")
    return runtime


def _is_ready(runtime: Runtime) -> bool:
    return runtime.inference is not None and runtime.ready and not runtime.draining and not runtime.stopping


@router.get("/health/live", summary="Liveness (v2)")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready", summary="Readiness (v2)", responses=problem_responses(400))
async def ready(runtime: Annotated[Runtime, Depends(get_runtime)]) -> dict[str, bool]:
    if not _is_ready(runtime):
        raise _v2_error(400, "The model is not ready.")
    return {"ready": True}


@router.get("", summary="Server metadata (v2)")
async def server_metadata() -> dict[str, Any]:
    return {"name": "cats-dogs-other", "version": __version__, "extensions": ["binary_tensor_data"]}


@router.get("/models/{name}", summary="Model metadata (v2)", responses=problem_responses(404))
async def model_metadata(name: str, runtime: Annotated[Runtime, Depends(get_runtime)]) -> dict[str, Any]:
    _model(runtime, name)
    labels = len(runtime.classifier.labels) if runtime.classifier else 3
    return {
        "name": MODEL_NAME,
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, labels]},
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
        ],
    }


@router.get("/models/{name}/ready", summary="Model readiness (v2)", responses=problem_responses(400, 404))
async def model_ready(name: str, runtime: Annotated[Runtime, Depends(get_runtime)]) -> dict[str, Any]:
    _model(runtime, name)
    if not _is_ready(runtime):
        raise _v2_error(400, "The model is not ready.")
    return {"name": MODEL_NAME, "ready": True}


@router.post(
    "/models/{name}/infer",
    summary="Classify encoded images (v2)",
    responses=problem_responses(400, 401, 403, 404, 413, 415, 503),
    dependencies=[Depends(require_prediction_token)],
    openapi_extra={
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
    },
)
async def infer(
    name: str, request: Request, inference: Inference, runtime: Annotated[Runtime, Depends(get_runtime)]
) -> Response:
    _model(runtime, name)
    body = await request.body()
    try:  # counting and validating a 10 MB body takes milliseconds: not on the event loop
        parsed = await anyio.to_thread.run_sync(
            parse_infer_request,
            body,
            request.headers.get(HEADER_LENGTH),
            runtime.settings.max_files_per_request,
        )
    except V2RequestError as exc:
        raise _v2_error(400, str(exc)) from None
    del body
    results = await inference.predict_all(parsed.images)  # the first bad image: its 4xx, the rest stop
    scores = np.array([r.values for r in results], dtype=np.float32)
    return _response(parsed.request, scores, [r.prediction for r in results])


def _response(request: InferenceRequest, scores: np.ndarray, labels: list[str]) -> Response:
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
    body: dict[str, Any] = {"model_name": MODEL_NAME, "model_version": "1", "outputs": outputs}
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


__all__ = ["MODEL_NAME", "PROBLEM_MEDIA_TYPE", "router"]
