"""RFC 9457 problem details: every error this service returns, client's or its own, has this shape."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from cats_dogs_other.inference.batching import QueueFullError
from cats_dogs_other.inference.decode import ImageErrorKind, InvalidImageError

PROBLEM_MEDIA_TYPE = "application/problem+json"
INTERNAL_ERROR_DETAIL = "The server failed to handle this request; it has been logged under its request id."


class ProblemDetails(BaseModel):
    """An error, as RFC 9457 describes it. `request_id` matches the `X-Request-ID` response header."""

    model_config = ConfigDict(extra="allow")

    type: str = Field("about:blank", description="A URI for the problem type; about:blank: see `title`.")
    title: str = Field(description="The HTTP status phrase.", examples=["Unsupported Media Type"])
    status: int = Field(description="The HTTP status code.", examples=[415])
    detail: str = Field(
        description="What went wrong and what to do about it, for humans.",
        examples=["Not a supported image: expected JPEG, PNG, WebP, GIF, BMP or TIFF content."],
    )
    instance: str | None = Field(None, description="The request path.", examples=["/upload"])
    request_id: str | None = Field(None, description="The request's id, for support.")


def problem(
    status: int,
    detail: str,
    request: Request | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = ProblemDetails(
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        instance=request.url.path if request is not None else None,
        request_id=request_id_of(request) if request is not None else None,
        **extra,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True), status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE
    )


def request_id_of(request: Request) -> str | None:
    value = request.scope.get("state", {}).get("request_id")
    return value if isinstance(value, str) else None


IMAGE_ERROR_STATUS = {
    ImageErrorKind.EMPTY: 415,
    ImageErrorKind.UNSUPPORTED: 415,
    ImageErrorKind.CORRUPT: 415,
    ImageErrorKind.TOO_MANY_PIXELS: 413,
}


def image_error_status(error: InvalidImageError) -> int:
    return IMAGE_ERROR_STATUS[error.kind]


def install_problem_handlers(app: FastAPI) -> None:
    async def on_http_exception(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        detail = str(exc.detail)
        # The v2 protocol's clients read an `error` field; it rides along as a problem extension.
        extra: dict[str, Any] = {"error": detail} if request.url.path.startswith("/v2/") else {}
        return problem(exc.status_code, detail, request, headers=dict(exc.headers or {}), **extra)

    async def on_invalid_image(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, InvalidImageError)
        extra: dict[str, Any] = {"error": str(exc)} if request.url.path.startswith("/v2/") else {}
        return problem(image_error_status(exc), str(exc), request, code=exc.kind.value, **extra)

    async def on_queue_full(request: Request, exc: Exception) -> JSONResponse:
        return problem(
            503, f"The service is at capacity ({exc}); retry shortly.", request, headers={"Retry-After": "1"}
        )

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {
                "location": ".".join(str(part) for part in error.get("loc", ())),
                "message": error.get("msg", ""),
            }
            for error in exc.errors()
        ]
        content_type = request.headers.get("content-type", "")
        missing = [e["location"].removeprefix("body.") for e in errors if e["message"] == "Field required"]
        if request.method == "POST" and not content_type.startswith("multipart/form-data"):
            shown = content_type.split(";")[0] or "no Content-Type"
            return problem(
                415, f"Expected multipart/form-data with the image as a file part, got {shown}.", request
            )
        if missing:
            detail = f"Missing form part(s): {', '.join(missing)}. Send the image as a multipart file part."
        else:
            detail = (
                "; ".join(f"{e['location']}: {e['message']}" for e in errors) or "The request is not valid."
            )
        return problem(422, detail, request, errors=errors)

    app.add_exception_handler(HTTPException, on_http_exception)
    app.add_exception_handler(InvalidImageError, on_invalid_image)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(QueueFullError, on_queue_full)
