"""Uvicorn, with what a service facing the internet needs and Uvicorn lacks out of the box.

- Draining: on SIGTERM `/ready` turns 503 first while requests are still served, for
  `shutdown_drain_seconds`, so load balancers and Kubernetes stop sending traffic; only then does Uvicorn's
  own graceful shutdown run (stop accepting, let in-flight requests finish within
  `shutdown_grace_seconds`, run the lifespan shutdown).
- Limits before the app, in the HTTP protocol (`LimitedHttpProtocol`): Uvicorn and httptools put no bound
  on the headers of a request (two clients streaming header lines took the process to 3 GiB), nor on the
  number of connections, nor on the time headers take (slowloris). Here the request line and headers are
  capped in bytes and lines (431 and close), the connections of a process are capped (503 and close),
  and headers not complete within `header_timeout_seconds` get the connection closed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from dataclasses import dataclass
from http import HTTPStatus
from types import FrameType
from typing import cast

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from cats_dogs_other.api.problems import PROBLEM_MEDIA_TYPE, ProblemDetails
from cats_dogs_other.api.state import Phase, ServiceState
from cats_dogs_other.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProtocolLimits:
    header_timeout_seconds: float
    max_header_bytes: int
    max_header_count: int
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ProtocolLimits:
        return cls(
            settings.header_timeout_seconds,
            settings.max_header_bytes,
            settings.max_header_count,
            settings.max_connections,
        )


# Requests a client may send ahead on one connection before reading answers; real clients rarely
# pipeline at all, and Uvicorn keeps every queued request in memory.
MAX_PIPELINED_REQUESTS = 64


class _RefusedError(Exception):
    """Raised in a parser callback to stop httptools; `send_400_response` then answers `_refusal`."""


class LimitedHttpProtocol(HttpToolsProtocol):
    """Uvicorn's httptools protocol with header, connection and header-time limits.

    Header bytes are counted as they arrive, before httptools buffers them: data is fed in slices no
    larger than what the headers may still take, and once they are complete the rest goes through
    uncounted (a body that arrives with its headers is never mistaken for headers). The count restarts
    when a request ends, so with pipelined requests the bytes after the last complete one in a slice
    are not counted: a request's headers are held to at most twice the cap. The limits are bound by
    `with_limits`, which is what Uvicorn's `http` option gets (worker processes receive it pickled).
    """

    def __init__(self, *args: object, limits: ProtocolLimits, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._limits = limits
        self._header_timer: asyncio.TimerHandle | None = None
        self._in_headers = True
        self._header_bytes = 0
        self._header_count = 0
        self._refusal: tuple[HTTPStatus, str] | None = None

    @classmethod
    def with_limits(cls, limits: ProtocolLimits) -> type[asyncio.Protocol]:
        """The protocol factory for `uvicorn.Config(http=...)`: a partial, so it pickles to workers."""
        return cast(type[asyncio.Protocol], functools.partial(cls, limits=limits))

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._limits.max_connections:
            log.warning("refusing a connection: %d are open already", len(self.connections) - 1)
            self._refuse(
                HTTPStatus.SERVICE_UNAVAILABLE,
                "The server has too many open connections; retry shortly.",
                {"Retry-After": "1"},
            )
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        while data and not self.transport.is_closing():
            if not self._in_headers:
                super().data_received(data)
                return
            room = self._limits.max_header_bytes - self._header_bytes
            if room <= 0:
                self._refuse_large_headers(f"over {self._limits.max_header_bytes:,} bytes")
                return
            piece, data = data[:room], data[room:]
            self._header_bytes += len(piece)
            super().data_received(piece)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._header_count = 0
        self._arm()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self._limits.max_header_count:
            lines = f"over {self._limits.max_header_count} header lines"
            self._refusal = (HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, _headers_detail(lines))
            raise _RefusedError  # httptools stops parsing; Uvicorn calls send_400_response
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._disarm()
        if len(self.pipeline) >= MAX_PIPELINED_REQUESTS:
            detail = f"Over {MAX_PIPELINED_REQUESTS} requests were sent ahead on one connection."
            self._refusal = (HTTPStatus.TOO_MANY_REQUESTS, detail)
            raise _RefusedError
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.pipeline:  # Uvicorn resumes reading here; more would only queue behind what waits
            self.flow.pause_reading()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_headers = True  # what follows on this connection is the next request's headers
        self._header_bytes = 0

    def send_400_response(self, msg: str) -> None:
        if self._refusal is None:
            super().send_400_response(msg)
            return
        status, detail = self._refusal
        log.info("refusing a request: %s", detail)
        self._refuse(status, detail)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _refuse_large_headers(self, what: str) -> None:
        log.info("refusing a request whose headers are %s", what)
        self._refuse(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, _headers_detail(what))

    def _refuse(self, status: HTTPStatus, detail: str, headers: dict[str, str] | None = None) -> None:
        """Answer with problem+json and close, without involving the app (it never saw this request)."""
        body = (
            ProblemDetails(title=status.phrase, status=int(status), detail=detail)
            .model_dump_json(exclude_none=True)
            .encode()
        )
        lines = [
            f"HTTP/1.1 {int(status)} {status.phrase}",
            f"Content-Type: {PROBLEM_MEDIA_TYPE}",
            f"Content-Length: {len(body)}",
            "Connection: close",
            *(f"{name}: {value}" for name, value in (headers or {}).items()),
        ]
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        self.transport.close()
        self._disarm()

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self._limits.header_timeout_seconds, self._expire)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expire(self) -> None:
        log.info(
            "closing a connection whose request headers took over %s s", self._limits.header_timeout_seconds
        )
        self.transport.close()


def _headers_detail(what: str) -> str:
    return f"The request line and headers are {what}; send fewer or shorter headers."


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, state: ServiceState, drain_seconds: float) -> None:
        super().__init__(config)
        self.state = state
        self.drain_seconds = drain_seconds
        self._draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining or self.drain_seconds <= 0:  # a second signal, or no drain: stop now
            super().handle_exit(sig, frame)
            return
        self._draining = True
        self.state.advance(Phase.DRAINING)
        log.info(
            "signal %s: /ready answers 503; still serving for %s s before shutting down",
            sig,
            self.drain_seconds,
        )
        timer = threading.Timer(self.drain_seconds, super().handle_exit, (sig, frame))
        timer.daemon = True
        timer.start()
