"""Request ids and access logs, as a plain ASGI middleware (no body buffering, streaming untouched)."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from dataclasses import dataclass

import anyio
from opentelemetry import trace
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cats_dogs_other.api.handoff import REQUEST_HANDOFF_KEY
from cats_dogs_other.api.problems import INTERNAL_ERROR_DETAIL, problem
from cats_dogs_other.observability.metrics import ServiceMetrics

REQUEST_ID_HEADER = b"x-request-id"
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left before its answer
BODY_TAIL_BYTES = 128
# An incoming id is echoed into logs and headers, so only a short, plain token is trusted.
_VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")

access_log = logging.getLogger("cats_dogs_other.access")


def valid_request_id(incoming: bytes) -> bool:
    return _VALID_REQUEST_ID.fullmatch(incoming) is not None


def new_request_id() -> str:
    """32 random hex digits, like a uuid4 but from Python's generator: an id is not a secret, and
    `uuid4` reads /dev/urandom, a system call that gives up the GIL on every request; under load the
    event loop then waited for decode threads to hand it back (a fifth of its time at 256 clients)."""
    return f"{random.getrandbits(128):032x}"


error_log = logging.getLogger(__name__)


class RequestContextMiddleware:
    """Gives every request an id (the client's `X-Request-ID` when sane), returns it, logs one JSON line.

    The log line has method, path, status, duration and the client address: never headers, query values
    or bodies, so neither tokens nor image bytes can leak into logs. The request's span is OpenTelemetry's
    ASGI middleware's, outside this one (it joins a caller's `traceparent`); this one names it after the
    route template and adds the request id and the final status (499 when the client left).
    """

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics | None = None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(REQUEST_ID_HEADER, b"")
        request_id = incoming.decode() if valid_request_id(incoming) else new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        span = trace.get_current_span()  # a non-recording no-op when tracing is off
        if span.is_recording():
            span.set_attributes(
                {"http.request.method": scope["method"], "url.path": scope["path"], "request.id": request_id}
            )

        def annotate_span(status: int) -> None:
            """Route and status on the span: at the response's start, as the span ends with its body."""
            if span.is_recording():
                route = getattr(scope.get("route"), "path", None)
                if route:
                    span.update_name(f"{scope['method']} {route}")
                    span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, request_id.encode())]
                annotate_span(status)
            await send(message)

        response_started = False

        async def send_tracking(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send_with_id(message)

        try:
            await self.app(scope, receive, send_tracking)
        except ClientDisconnect:
            # The client left while its body was being read: nobody to answer, nothing went wrong here.
            scope.setdefault("state", {})["client_disconnected"] = True
        except Exception:
            # The last line of defence: log the traceback (never the request), answer a bare 500.
            error_log.exception("unhandled error", extra={"request_id": request_id})
            if response_started:
                raise
            await problem(500, INTERNAL_ERROR_DETAIL, Request(scope))(scope, receive, send_with_id)
        finally:
            handoff = scope.get("state", {}).get(REQUEST_HANDOFF_KEY)
            if handoff is not None and handoff.ticket is not None:  # admitted by the transport: given back
                handoff.ticket.release()
            route = getattr(scope.get("route"), "path", None)
            if not response_started and scope.get("state", {}).get("client_disconnected"):
                status = CLIENT_CLOSED_REQUEST
            if not response_started:
                annotate_span(status)
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


@dataclass
class BodyBudget:
    """Bytes of request bodies being received or held, across the process (`BODY_MEMORY_BYTES`).

    The event loop is the only writer, so a plain counter is enough.
    """

    capacity: int
    in_use: int = 0

    def take(self, nbytes: int) -> bool:
        if self.in_use + nbytes > self.capacity:
            return False
        self.in_use += nbytes
        return True

    def give_back(self, nbytes: int) -> None:
        self.in_use -= nbytes


class BodyLimitMiddleware:
    """Bounds every request body in size, in time and, across requests, in memory.

    - Over `max_bytes`: 413. A declared `Content-Length` is answered at once, before any byte is read;
      a chunked or lying body is cut off as soon as the running count passes the limit.
    - No chunk for `chunk_timeout_seconds`, or the whole body not in within `deadline_seconds`: 408, so
      neither a stalled nor a trickling client can pin a connection and its admission slot.
    - The bytes of all bodies in flight are held to `budget`: a declared length is reserved before the
      body is read, an undeclared one as it arrives; past it, 503 with Retry-After.
    All answers are problem+json (FastAPI's own `max_body_size` answers plain text with a Content-Length).
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        budget: BodyBudget,
        chunk_timeout_seconds: float,  # BODY_TIMEOUT_SECONDS
        deadline_seconds: float,  # BODY_DEADLINE_SECONDS
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.budget = budget
        self.chunk_timeout = chunk_timeout_seconds
        self.deadline = deadline_seconds

    def _too_large(self) -> HTTPException:
        return HTTPException(
            413, f"The request body is larger than the limit of {self.max_bytes:,} bytes (MAX_UPLOAD_BYTES)."
        )

    def _busy(self) -> HTTPException:
        return HTTPException(
            503,
            "The service is receiving as many request bodies as its memory allows; retry shortly.",
            {"Retry-After": "1"},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        declared_size = int(declared) if declared is not None and declared.isdigit() else None
        if declared_size is not None and declared_size > self.max_bytes:
            await self._answer(self._too_large(), scope, receive, send, {"Connection": "close"})
            return
        reserved = declared_size or 0
        if not self.budget.take(reserved):
            await self._answer(self._busy(), scope, receive, send, {"Connection": "close"})
            return
        received = 0
        started: float | None = None
        state = scope.setdefault("state", {})
        state["body_tail"] = b""  # the last bytes, to tell a complete multipart body from a truncated one

        async def counting_receive() -> Message:
            nonlocal received, reserved, started
            now = time.monotonic()
            started = now if started is None else started
            left = started + self.deadline - now
            try:
                message = await asyncio.wait_for(receive(), max(0.0, min(self.chunk_timeout, left)))
            except TimeoutError:
                late = left <= self.chunk_timeout
                raise HTTPException(
                    408,
                    f"The request body took over {self.deadline:g} s to arrive."
                    if late
                    else f"The request body stalled for over {self.chunk_timeout:g} s.",
                ) from None
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                received += len(chunk)
                state["body_tail"] = (state["body_tail"] + chunk)[-BODY_TAIL_BYTES:]
                if received > self.max_bytes:
                    raise self._too_large()  # FastAPI re-raises HTTPException to the problem handlers
                if received > reserved:
                    if not self.budget.take(received - reserved):
                        raise self._busy()
                    reserved = received
            return message

        try:
            await self.app(scope, counting_receive, send)
        finally:
            self.budget.give_back(reserved)

    async def _answer(
        self, error: HTTPException, scope: Scope, receive: Receive, send: Send, headers: dict[str, str]
    ) -> None:
        response = problem(
            error.status_code, str(error.detail), Request(scope), headers={**(error.headers or {}), **headers}
        )
        await response(scope, receive, send)


class CancelOnDisconnectMiddleware:
    """Stops a request's work when its client leaves before the answer is sent.

    Once the app has read the whole body, the connection is watched; a disconnect cancels the request
    (and, through its task group, every image still being decoded or queued for it), so a client that
    gave up does not keep the model busy. The request is logged with status 499, nginx's "client closed
    request". Sits outside the body-limit middleware, so the watch reads Uvicorn's receive directly.
    The watching task starts only once the body is read: requests refused before (401, 503) pay for
    nothing but a cancel scope.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        answered = False
        watcher: asyncio.Task[None] | None = None

        with anyio.CancelScope() as request_scope:

            async def watch() -> None:
                message = await receive()
                if message["type"] == "http.disconnect" and not answered:
                    scope.setdefault("state", {})["client_disconnected"] = True
                    request_scope.cancel()

            async def tracking_receive() -> Message:
                nonlocal watcher
                message = await receive()
                body_read = message["type"] != "http.request" or not message.get("more_body", False)
                if body_read and watcher is None:  # only now: a request refused earlier costs no task
                    watcher = asyncio.create_task(watch(), name="disconnect-watch")
                return message

            async def tracking_send(message: Message) -> None:
                nonlocal answered
                if message["type"] == "http.response.body" and not message.get("more_body", False):
                    answered = True
                await send(message)

            try:
                await self.app(scope, tracking_receive, tracking_send)
            finally:
                if watcher is not None:
                    watcher.cancel()
