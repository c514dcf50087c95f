"""Request ids and access logs, as a plain ASGI middleware (no body buffering, streaming untouched)."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid

from opentelemetry import trace
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cats_dogs_other.api.problems import INTERNAL_ERROR_DETAIL, problem
from cats_dogs_other.observability.metrics import ServiceMetrics

REQUEST_ID_HEADER = b"x-request-id"
BODY_TAIL_BYTES = 128
# An incoming id is echoed into logs and headers, so only a short, plain token is trusted.
_VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")

access_log = logging.getLogger("cats_dogs_other.access")
error_log = logging.getLogger(__name__)


class RequestContextMiddleware:
    """Gives every request an id (the client's `X-Request-ID` when sane), returns it, logs one JSON line.

    The log line has method, path, status, duration and the client address: never headers, query values
    or bodies, so neither tokens nor image bytes can leak into logs.
    """

    def __init__(
        self, app: ASGIApp, metrics: ServiceMetrics | None = None, tracer: trace.Tracer | None = None
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.tracer = tracer or trace.NoOpTracer()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(REQUEST_ID_HEADER, b"")
        request_id = incoming.decode() if _VALID_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, request_id.encode())]
            await send(message)

        response_started = False

        async def send_tracking(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send_with_id(message)

        span = self.tracer.start_span(
            f"{scope['method']} {scope['path']}",
            kind=trace.SpanKind.SERVER,
            attributes={
                "http.request.method": scope["method"],
                "url.path": scope["path"],
                "request.id": request_id,
            },
        )
        try:
            with trace.use_span(span, end_on_exit=False):
                await self.app(scope, receive, send_tracking)
        except Exception:
            # The last line of defence: log the traceback (never the request), answer a bare 500.
            error_log.exception("unhandled error", extra={"request_id": request_id})
            if response_started:
                raise
            await problem(500, INTERNAL_ERROR_DETAIL, Request(scope))(scope, receive, send_with_id)
        finally:
            route = getattr(scope.get("route"), "path", None)
            if route:
                span.update_name(f"{scope['method']} {route}")
                span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", status)
            span.end()
            elapsed = time.perf_counter() - started
            if self.metrics is not None:
                # The route template, not the path: unknown paths must not create new series.
                labels = (scope["method"], route or "unmatched", str(status))
                self.metrics.requests.labels(*labels).inc()
                self.metrics.latency.labels(*labels).observe(elapsed)
            client = scope.get("client")
            access_log.info(
                "%s %s %d",
                scope["method"],
                scope["path"],
                status,
                extra={
                    "request_id": request_id,
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "client": f"{client[0]}:{client[1]}" if client else None,
                },
            )


class BodyLimitMiddleware:
    """Refuses request bodies over `max_bytes` while they stream in, so no unbounded body is ever held,
    and bodies that stall (no chunk for `chunk_timeout_seconds`) with 408, so slow clients cannot pin us.

    A declared `Content-Length` over the limit is answered at once, before any byte is read; a chunked or
    lying body is cut off as soon as the running count passes the limit. Both answers are problem+json
    (FastAPI's own `max_body_size` answers plain text when a Content-Length is declared).
    """

    def __init__(self, app: ASGIApp, max_bytes: int, chunk_timeout_seconds: float = 30.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.chunk_timeout = chunk_timeout_seconds

    def _too_large(self) -> HTTPException:
        return HTTPException(
            413, f"The request body is larger than the limit of {self.max_bytes:,} bytes (MAX_UPLOAD_BYTES)."
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            request = Request(scope)
            await problem(413, str(self._too_large().detail), request, headers={"Connection": "close"})(
                scope, receive, send
            )
            return
        received = 0
        state = scope.setdefault("state", {})
        state["body_tail"] = b""  # the last bytes, to tell a complete multipart body from a truncated one

        async def counting_receive() -> Message:
            nonlocal received
            try:
                message = await asyncio.wait_for(receive(), self.chunk_timeout)
            except TimeoutError:
                raise HTTPException(
                    408, f"The request body stalled for over {self.chunk_timeout:g} s."
                ) from None
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                received += len(chunk)
                state["body_tail"] = (state["body_tail"] + chunk)[-BODY_TAIL_BYTES:]
                if received > self.max_bytes:
                    raise self._too_large()  # FastAPI re-raises HTTPException to the problem handlers
            return message

        await self.app(scope, counting_receive, send)
