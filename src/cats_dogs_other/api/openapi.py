"""What the OpenAPI document says beyond what FastAPI infers: error bodies, multipart bodies, auth."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from cats_dogs_other.api.problems import PROBLEM_MEDIA_TYPE, ProblemDetails
from cats_dogs_other.settings import Settings

DESCRIPTION = """
Says whether an image shows a **cat**, a **dog** or **something else**.

`POST /upload` with one multipart part `file` answers
`{"prediction": "Cat", "values": [p_cat, p_dog, p_other]}`; `POST /predict` takes several parts
named `files`. Errors are RFC 9457 `application/problem+json`.
"""

TAGS = [
    {"name": "inference", "description": "Classify images."},
    {"name": "health", "description": "Probes and version information for operators and load balancers."},
    {"name": "feedback", "description": "Corrections of the model's answers, kept as training data."},
]

_PROBLEM_DESCRIPTIONS = {
    400: "Malformed request (a broken multipart body, too many files), or (v2) a model that is not ready.",
    401: "No bearer token, or a token that is not valid (expired, wrong issuer or audience, bad signature).",
    403: "A valid token without the required scope (get::prediction by default; post::feedback to send "
    "feedback), or (feedback) anonymous feedback while it is off.",
    404: "No model by that name, or (POST /feedback) feedback is off on this service.",
    413: "The request body is over MAX_UPLOAD_BYTES, or the image has more pixels than MAX_PIXELS.",
    415: "Not multipart/form-data, or the file is not a supported image (or is corrupt or empty).",
    422: "A required form part is missing or misnamed.",
    429: "(POST /feedback) You sent FEEDBACK_DAILY_QUOTA labels in the last 24 hours; retry after "
    "`Retry-After` seconds. Changing a label you already sent still works.",
    500: "The server failed; the body carries a request id to quote.",
    503: "The model is not loaded yet, the service is shutting down, or the identity provider's keys are "
    "unavailable; retry after `Retry-After` seconds.",
    507: "(POST /feedback) The feedback store is past FEEDBACK_MAX_STORE_BYTES: no new image is kept "
    "until the operator purges or erases some.",
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


def openapi_document(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """FastAPI's document, with two fixes: error bodies are application/problem+json (FastAPI says
    application/json), and with auth disabled no operation claims to need a token."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
            tags=app.openapi_tags,
        )
        problem_ref = {"$ref": "#/components/schemas/ProblemDetails"}
        for operation in (op for path in schema["paths"].values() for op in path.values()):
            for response in operation.get("responses", {}).values():
                content = response.get("content", {})
                if content.get("application/json", {}).get("schema") == problem_ref:
                    response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": problem_ref}}
            if settings.auth_disabled:
                operation.pop("security", None)
                for status in ("401", "403"):
                    operation.get("responses", {}).pop(status, None)
        if settings.auth_disabled:
            schema.get("components", {}).pop("securitySchemes", None)
        app.openapi_schema = schema
    return app.openapi_schema
