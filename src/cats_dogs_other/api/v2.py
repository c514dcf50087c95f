"""The Open Inference Protocol (KServe v2) over HTTP, for clients and platforms that speak it.

`/v2/models/{name}/infer` takes a BYTES input of encoded images (JSON with base64 strings, or the binary
tensor data extension that `tritonclient` uses by default) and returns the probabilities (FP32
[N, labels]) and the winning labels (BYTES [N]). Images go through the same decoding, batching and model
as `/upload`.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import JSONResponse

from cats_dogs_other import __version__
from cats_dogs_other.api.problems import PROBLEM_MEDIA_TYPE, image_error_status
from cats_dogs_other.api.routes import Inference, problem_responses
from cats_dogs_other.api.runtime import Runtime, get_runtime
from cats_dogs_other.auth.dependency import require_prediction_token
from cats_dogs_other.inference.decode import InvalidImageError

MODEL_NAME = "cats-dogs-other"
HEADER_LENGTH = "Inference-Header-Content-Length"
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
    header, binary = _split_body(await request.body(), request.headers.get(HEADER_LENGTH))
    images, request_id = _images(header, binary)
    results = await inference.predict_each(images)
    for index, result in enumerate(results):
        if isinstance(result, InvalidImageError):
            raise HTTPException(image_error_status(result), f"Image {index}: {result}")
    scores = np.array([r.values for r in results], dtype=np.float32)  # type: ignore[union-attr]
    labels = [r.prediction for r in results]  # type: ignore[union-attr]
    return _response(header, request_id, scores, labels)


def _split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    try:
        size = int(header_length) if header_length is not None else len(body)
        if not 0 < size <= len(body):
            raise ValueError
        header = json.loads(body[:size])
    except (ValueError, UnicodeDecodeError) as exc:
        raise _v2_error(
            400, f"The inference request is not valid JSON ({HEADER_LENGTH} {header_length})."
        ) from exc
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list) or not header["inputs"]:
        raise _v2_error(400, "The inference request needs a non-empty `inputs` list.")
    return header, body[size:]


def _images(header: dict[str, Any], binary: bytes) -> tuple[list[bytes], str | None]:
    inputs = header["inputs"]
    if len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise _v2_error(400, "Send exactly one input: the encoded images, as a BYTES tensor.")
    tensor = inputs[0]
    if tensor.get("datatype") != "BYTES":
        raise _v2_error(
            400, f"The input must be a BYTES tensor of encoded images, not {tensor.get('datatype')}."
        )
    shape = tensor.get("shape")
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        images = _unpack_bytes(binary[: int(size)])
    else:
        data = tensor.get("data")
        if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
            raise _v2_error(
                400, "`data` must be a list of base64 strings (or use the binary data extension)."
            )
        try:
            images = [base64.b64decode(item, validate=True) for item in data]
        except (binascii.Error, ValueError) as exc:
            raise _v2_error(400, "An element of `data` is not valid base64.") from exc
    if not isinstance(shape, list) or int(np.prod(shape or [0])) != len(images) or not images:
        raise _v2_error(400, f"The input's shape {shape} does not match its {len(images)} element(s).")
    request_id = header.get("id")
    return images, request_id if isinstance(request_id, str) else None


def _unpack_bytes(raw: bytes) -> list[bytes]:
    """The binary BYTES layout: each element is a 4-byte little-endian length, then that many bytes."""
    items, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise _v2_error(400, "The binary BYTES tensor is truncated.")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise _v2_error(400, "The binary BYTES tensor is truncated.")
        items.append(raw[offset : offset + length])
        offset += length
    return items


def _response(
    header: dict[str, Any], request_id: str | None, scores: np.ndarray, labels: list[str]
) -> Response:
    wanted = {o.get("name"): o for o in header.get("outputs") or [] if isinstance(o, dict)}
    binary_default = bool((header.get("parameters") or {}).get("binary_data_output", False))
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
        binary = (wanted.get(name) or {}).get("parameters", {}).get("binary_data", binary_default)
        output: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
        if binary:
            output["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            output["data"] = values
        outputs.append(output)
    body: dict[str, Any] = {"model_name": MODEL_NAME, "model_version": "1", "outputs": outputs}
    if request_id is not None:
        body["id"] = request_id
    if not chunks:
        return JSONResponse(body)
    head = json.dumps(body).encode()
    return Response(
        head + b"".join(chunks),
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(head))},
    )


__all__ = ["MODEL_NAME", "PROBLEM_MEDIA_TYPE", "router"]
