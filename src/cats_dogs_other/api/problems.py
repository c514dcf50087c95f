"""RFC 9457 problem details: every error this service returns, client's or its own, has this shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.routing import Match

from cats_dogs_other.feedback import FeedbackUnavailableError
from cats_dogs_other.inference.batching import QueueFullError
from cats_dogs_other.inference.decode import UNSUPPORTED_DETAIL, ImageErrorKind, InvalidImageError
from cats_dogs_other.inference.documents import DocumentErrorKind, InvalidDocumentError

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
        examples=[UNSUPPORTED_DETAIL],
    )
    instance: str | None = Field(None, description="The request path.", examples=["/upload"])
    request_id: str | None = Field(None, description="The request's id, for support.")


@dataclass(frozen=True)
class Problem:
    """An error on its way out: status, detail for humans, headers, and any extension members."""

    status: int
    detail: str
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, Any] = field(default_factory=dict)

    def details(self, request: Request | None = None, **extensions: Any) -> ProblemDetails:
        return ProblemDetails(
            title=HTTPStatus(self.status).phrase,
            status=self.status,
            detail=self.detail,
            instance=request.url.path if request is not None else None,
            request_id=request_id_of(request) if request is not None else None,
            **self.extensions,
            **extensions,
        )

    def response(self, request: Request | None = None, **extensions: Any) -> JSONResponse:
        return JSONResponse(
            self.details(request, **extensions).model_dump(exclude_none=True),
            status_code=self.status,
            headers=self.headers or None,
            media_type=PROBLEM_MEDIA_TYPE,
        )


def problem(
    status: int,
    detail: str,
    request: Request | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    return Problem(status, detail, headers or {}, extra).response(request)


def request_id_of(request: Request) -> str | None:
    value = request.scope.get("state", {}).get("request_id")
    return value if isinstance(value, str) else None


IMAGE_ERROR_STATUS = {
    ImageErrorKind.EMPTY: 415,
    ImageErrorKind.UNSUPPORTED: 415,
    ImageErrorKind.CORRUPT: 415,
    ImageErrorKind.TOO_MANY_PIXELS: 413,
    ImageErrorKind.DECOMPRESSION_BOMB: 413,
    ImageErrorKind.TOO_SLOW: 422,
}
DOCUMENT_ERROR_STATUS = {
    DocumentErrorKind.ENCRYPTED: 422,
    DocumentErrorKind.MALFORMED: 400,
    DocumentErrorKind.TOO_MANY_PAGES: 413,
    DocumentErrorKind.TOO_MANY_IMAGES: 413,
    DocumentErrorKind.TOO_COMPLEX: 413,
    DocumentErrorKind.TOO_SLOW: 422,
}
FEEDBACK_RETRY_AFTER_SECONDS = "30"

# Every error type the service turns into an answer; anything else is a 500 (RequestContextMiddleware).
KNOWN_ERRORS = (
    HTTPException,
    InvalidImageError,
    InvalidDocumentError,
    QueueFullError,
    RequestValidationError,
    FeedbackUnavailableError,
)


def problem_for(exc: Exception, request: Request | None = None) -> Problem:
    """The one place an error becomes a problem: every route and protocol answers through it."""
    if isinstance(exc, InvalidImageError):
        return Problem(IMAGE_ERROR_STATUS[exc.kind], str(exc), extensions={"code": exc.kind.value})
    if isinstance(exc, InvalidDocumentError):
        return Problem(DOCUMENT_ERROR_STATUS[exc.kind], str(exc), extensions={"code": exc.kind.value})
    if isinstance(exc, QueueFullError):
        return Problem(
            503,
            f"The service is at capacity ({exc}); retry shortly.",
            {"Retry-After": str(exc.retry_after_seconds)},
        )
    if isinstance(exc, FeedbackUnavailableError):
        return Problem(
            503,
            f"{exc} Your feedback was not stored; send it again later. Predictions are not affected.",
            {"Retry-After": FEEDBACK_RETRY_AFTER_SECONDS},
        )
    if isinstance(exc, RequestValidationError):
        return _validation_problem(exc, request)
    if isinstance(exc, HTTPException):
        headers = dict(exc.headers or {})
        if exc.status_code == 405 and request is not None:
            headers["Allow"] = _allowed_methods(request) or headers.get("Allow", "")
        return Problem(exc.status_code, str(exc.detail), headers)
    raise TypeError(f"not an error this service answers: {type(exc).__name__}")


HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _allowed_methods(request: Request) -> str:
    """Every method some route takes at this path: Starlette's 405 names only the first route's, and
    /feedback has two (POST to send, DELETE to erase). Asked of the routes' own matching."""
    routes = request.app.router.routes
    allowed = [
        method
        for method in HTTP_METHODS
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)
    ]
    return ", ".join(allowed)


def _validation_problem(exc: RequestValidationError, request: Request | None) -> Problem:
    errors = [
        {"location": ".".join(str(part) for part in error.get("loc", ())), "message": error.get("msg", "")}
        for error in exc.errors()
    ]
    content_type = request.headers.get("content-type", "") if request is not None else ""
    if (
        request is not None
        and request.method == "POST"
        and not content_type.startswith("multipart/form-data")
    ):
        shown = content_type.split(";")[0] or "no Content-Type"
        return Problem(415, f"Expected multipart/form-data with the image as a file part, got {shown}.")
    missing = [e["location"].removeprefix("body.") for e in errors if e["message"] == "Field required"]
    if missing:
        detail = f"Missing form part(s): {', '.join(missing)}. Send the image as a multipart file part."
    else:
        detail = "; ".join(f"{e['location']}: {e['message']}" for e in errors) or "The request is not valid."
    return Problem(422, detail, extensions={"errors": errors})


def install_problem_handlers(app: FastAPI) -> None:
    async def answer(request: Request, exc: Exception) -> JSONResponse:
        return problem_for(exc, request).response(request)

    for error_type in KNOWN_ERRORS:
        app.add_exception_handler(error_type, answer)
