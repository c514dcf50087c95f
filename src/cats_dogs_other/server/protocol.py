"""Uvicorn's HTTP protocol, with what a service facing the internet needs and Uvicorn lacks out of the box.

- Limits before the app (`LimitedHttpProtocol`): Uvicorn and httptools put no bound on the headers of a
  request (two clients streaming header lines took the process to 3 GiB), nor on the number of
  connections, nor on the time headers take (slowloris). Here the request line and headers are capped in
  bytes and lines (431 and close), the connections of a process are capped (503 and close), and headers
  not complete within `header_timeout_seconds` get the connection closed.
- Authentication and load shedding before the app (`server.shedding`): a prediction request without a
  valid token gets its 401/403, and under overload one gets its 503, as soon as its headers are parsed;
  its body is dropped unread (or the connection closed), and a connection refused again and again is
  read more and more slowly (`pace_after`).
- `GET /health` answered here, without an app task.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import cast

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from cats_dogs_other.api.handoff import RequestHandoff
from cats_dogs_other.api.middleware import REQUEST_ID_HEADER, new_request_id, valid_request_id
from cats_dogs_other.api.problems import PROBLEM_MEDIA_TYPE, ProblemDetails
from cats_dogs_other.inference.admission import Ticket
from cats_dogs_other.server.shedding import ArrivingRequest, LoadShedder, Refused
from cats_dogs_other.settings import LimitSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProtocolLimits:
    header_timeout_seconds: float
    max_header_bytes: int
    max_header_count: int
    max_connections: int

    @classmethod
    def from_settings(cls, settings: LimitSettings) -> ProtocolLimits:
        return cls(
            settings.header_timeout_seconds,
            settings.max_header_bytes,
            settings.max_header_count,
            settings.max_connections,
        )


# Requests a client may send ahead on one connection before reading answers; real clients rarely
# pipeline at all, and Uvicorn keeps every queued request in memory.
MAX_PIPELINED_REQUESTS = 64
# After a shed request's 503, its body is still on its way: closing at once with unread bytes makes the
# kernel answer with a reset, which can destroy the 503 before the client reads it. So the server
# closes its side for writing, discards what still arrives, and closes when the client does, or after
# this long (a lingering close, as nginx does).
LINGER_SECONDS = 2.0
# A shed request's body up to this size is read and dropped, keeping the connection (no reconnect for
# the client, no accept for the server); a larger or chunked one gets the lingering close.
SKIPPED_BODY_MAX_BYTES = 1 << 20
# After a refused request, the next request on its connection is read no sooner than this, doubled
# for each refusal in a row, up to the refusal's Retry-After: a client that ignores Retry-After and
# asks again at once (wrk does) could otherwise make refusing the event loop's only work, and a fixed
# pause only halves it (BENCHMARKS.md, *Where the CPU went, before and after*). 25 ms keeps a client
# refused once answered soon; one refused again and again costs one refusal per Retry-After.
SHED_PACE_SECONDS = 0.025
LIVENESS_PATH = b"/health"
LIVENESS_BODY = b'{"status":"OK"}'  # what the /health route answers (api.schemas.Health)


@dataclass(frozen=True)
class _Answer:
    """What the protocol answers itself, without the app: a problem, then close."""

    status: HTTPStatus
    detail: str
    headers: dict[str, str] = field(default_factory=dict)
    instance: str | None = None
    request_id: str | None = None
    linger: bool = False  # half-close and drop what still arrives, rather than close with unread bytes
    logged: bool = True  # shed requests are summed up by the shedder instead


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
        self._header_tail = b""  # the last bytes of headers fed, where a CRLF CRLF may begin
        self._header_count = 0
        self._refusal: _Answer | None = None
        self._deferred: _Answer | None = None  # a refusal waiting for the answer in progress to be sent
        self._discarding = False  # after a shed request's 503: what arrives is dropped
        self._linger_timer: asyncio.TimerHandle | None = None
        self._shedder = LoadShedder.of(self.app_state) if isinstance(self.app_state, dict) else None
        self._tickets: list[Ticket] = []  # places taken by this connection's requests (released twice: ok)
        self._answered_here = False  # the current request was answered here (GET /health, or shed)
        self._shed_pending = False
        self._body_left = 0  # bytes of a refused request's body still to drop
        self._paced = False  # a refused request is complete and its pace not over: nothing is parsed
        self._held = b""  # what arrived meanwhile (reading is paused: one read at most)
        self._refused_in_a_row = 0  # this connection's requests refused here since one was let through
        self._pace_seconds = SHED_PACE_SECONDS
        self._answered_in_this_read = 0  # requests of the current read answered here

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
        if self._discarding:
            return
        self._answered_in_this_read = 0
        while data and not self.transport.is_closing() and not self._discarding:
            if self._paced:  # what follows a paced refusal waits for its pace (`_end_pace`)
                self._held += data
                return
            if not self._in_headers:
                if self._answered_here and self._body_left:
                    # The dropped body of a request refused here, fed up to its end and no further, so
                    # that the next request is parsed only once this one's pace is over.
                    piece, data = data[: self._body_left], data[self._body_left :]
                    self._feed(piece)
                    continue
                self._feed(data)
                return
            room = self._limits.max_header_bytes - self._header_bytes
            if room <= 0:
                self._refuse_large_headers(f"over {self._limits.max_header_bytes:,} bytes")
                return
            piece, data = data[:room], data[room:]
            # Up to the end of the headers only: the body is fed on its own (above), once it is known
            # whether the request was refused here. (Without a CRLF CRLF, as the slice comes.)
            end = (self._header_tail + piece).find(b"\r\n\r\n")
            if end >= 0:
                cut = end + 4 - len(self._header_tail)
                piece, data = piece[:cut], piece[cut:] + data
            self._header_tail = (self._header_tail + piece)[-3:]
            self._header_bytes += len(piece)
            self._feed(piece)

    def _feed(self, data: bytes) -> None:
        """Uvicorn's `data_received`, except that a request refused here on purpose is not logged as
        "Invalid HTTP request received." (one warning per shed request flooded the logs under load)."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self._refusal is None:
                message = "Invalid HTTP request received."
                self.logger.warning(message)
                self.send_400_response(message)
            else:
                self.send_400_response(self._refusal.detail)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._header_count = 0
        self._arm()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self._limits.max_header_count:
            lines = f"over {self._limits.max_header_count} header lines"
            self._refusal = _Answer(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, _headers_detail(lines))
            raise _RefusedError  # httptools stops parsing; Uvicorn calls send_400_response
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._disarm()
        if len(self.pipeline) >= MAX_PIPELINED_REQUESTS:
            detail = f"Over {MAX_PIPELINED_REQUESTS} requests were sent ahead on one connection."
            self._refusal = _Answer(
                HTTPStatus.TOO_MANY_REQUESTS, detail, linger=True
            )  # no reset: the 429 arrives
            raise _RefusedError
        # A request pipelined behind one still being answered is left to the app: an answer written from
        # here now would overtake the answer before it.
        # Nor is a request whose client is not reading its answers (something is still buffered to send):
        # the app's path waits for the buffer to drain, and counts what is pipelined meanwhile.
        idle = self.cycle is None or self.cycle.response_complete
        # And the protocol answers at most MAX_PIPELINED_REQUESTS of what one read brings: a client that
        # pipelines thousands of requests and reads nothing meets the app's pipelining limit (429).
        drained = not self.flow.write_paused and self.transport.get_write_buffer_size() == 0
        few = self._answered_in_this_read < MAX_PIPELINED_REQUESTS
        ready = idle and drained and few and self._shedder is not None
        if ready and self._answered_before_the_app(self._shedder):  # type: ignore[arg-type]
            return
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        if self._deferred is not None:
            answer, self._deferred = self._deferred, None
            self._answer(answer)
            return
        self._tickets = [ticket for ticket in self._tickets if not ticket.released]
        super().on_response_complete()
        if self.pipeline:  # Uvicorn resumes reading here; more would only queue behind what waits
            self.flow.pause_reading()

    def on_body(self, body: bytes) -> None:
        if self._answered_here:  # the body of a request answered here: dropped
            self._body_left = max(0, self._body_left - len(body))
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._answered_here:
            self._answered_here = False
            if self._shed_pending:
                # Paced: this connection's next request is read a little later (`pace_after`).
                self._shed_pending = False
                self._paced = True
                self.flow.pause_reading()
                self.loop.call_later(self._pace_seconds, self._end_pace)
            else:
                self.on_response_complete()  # keep-alive timer, reading resumed, as after any answer
        else:
            super().on_message_complete()
        self._in_headers = True  # what follows on this connection is the next request's headers
        self._header_bytes = 0
        self._header_tail = b""

    def _end_pace(self) -> None:
        """The pace of a refusal is over: reading resumes, and what arrived meanwhile is parsed."""
        self._paced = False
        self.on_response_complete()
        held, self._held = self._held, b""
        if held and not self.transport.is_closing():
            self.data_received(held)

    def send_400_response(self, msg: str) -> None:
        if self._refusal is None:
            super().send_400_response(msg)
            return
        if self._refusal.logged:
            log.info("refusing a request: %s", self._refusal.detail)
        if self.cycle is not None and not self.cycle.response_complete:
            # An earlier request's answer is still to come: the refusal follows it (answers keep their
            # order), nothing more is read, and what was pipelined behind is dropped.
            self._deferred = self._refusal
            self._discarding = True
            self.pipeline.clear()
            return
        self._answer(self._refusal)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        for ticket in self._tickets:  # requests the app never started, or is being cancelled from
            ticket.release()
        super().connection_lost(exc)

    def _answered_before_the_app(self, shedder: LoadShedder) -> bool:
        """Answer GET /health, or a prediction request the service has no room for, here; or admit it
        (its ticket goes with it to the app). True when answered."""
        method = self.parser.get_method()
        path = self.url.split(b"?", 1)[0]
        if path == LIVENESS_PATH and method == b"GET":
            self._answered_in_this_read += 1
            self._answer_liveness()
            return True
        peer = self.client[0] if self.client else None
        admitted = shedder.admit(ArrivingRequest(method, self.url, self.headers, peer))
        if not isinstance(admitted, Refused):  # let through: admitted here, or for the app to decide
            self._refused_in_a_row = 0
            if admitted is not None:
                handoff = RequestHandoff.in_state(self.scope["state"])  # the app gives the place back
                handoff.ticket, handoff.token = admitted.ticket, admitted.token
                self._tickets.append(admitted.ticket)
            return False
        self._refused_in_a_row += 1
        self._pace_seconds = pace_after(self._refused_in_a_row, admitted.retry_after_seconds)
        answer = _Answer(
            admitted.status,
            admitted.detail,
            admitted.headers,
            instance=path.decode("ascii", "replace"),
            request_id=self._request_id(),
            linger=True,
            logged=False,
        )
        if self._body_can_be_skipped():
            self._answered_here = True  # its body is dropped as it arrives; the connection stays open
            self._shed_pending = True
            self._body_left = self._declared_length() or 0
            self._answered_in_this_read += 1
            self.transport.write(_problem_bytes(answer, self.server_state.default_headers, close=False))
            return True
        self._refusal = answer
        raise _RefusedError  # send_400_response answers it and closes

    def _body_can_be_skipped(self) -> bool:
        """Whether the connection can be kept after answering before the body: the body is declared,
        small and really coming. A client waiting for `100 Continue` sends no body after a final answer,
        and a chunked or large one would keep the connection busy: those connections are closed."""
        if self.expect_100_continue or not self.parser.should_keep_alive():
            return False
        declared = self._declared_length()
        return declared is not None and declared <= SKIPPED_BODY_MAX_BYTES

    def _declared_length(self) -> int | None:
        declared = next((value for name, value in self.headers if name == b"content-length"), None)
        return int(declared) if declared is not None and declared.isdigit() else None

    def _answer_liveness(self) -> None:
        """`GET /health` answered here, as the route would (`{"status": "OK"}`), without an app task:
        liveness is that the process answers, and under overload an app task waits its turn behind
        every other request on the event loop (BENCHMARKS.md, *Where the time goes*), which a probe
        must not."""
        self._answered_here = True
        keep_alive = self.parser.should_keep_alive()
        headers = [
            *self.server_state.default_headers,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(LIVENESS_BODY)).encode()),
            (REQUEST_ID_HEADER, self._request_id().encode()),
            *([] if keep_alive else [(b"connection", b"close")]),
        ]
        head = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        self.transport.write(b"HTTP/1.1 200 OK\r\n" + head + b"\r\n" + LIVENESS_BODY)
        assert self._shedder is not None
        self._shedder.state.metrics.requests.labels("GET", "/health", "200").inc()
        if not keep_alive:
            self.transport.close()

    def _request_id(self) -> str:
        """The client's `X-Request-ID` when sane (as the app would echo it), else a new one."""
        for name, value in self.headers:
            if name == REQUEST_ID_HEADER and valid_request_id(value):
                return value.decode()
        return new_request_id()

    def _refuse_large_headers(self, what: str) -> None:
        log.info("refusing a request whose headers are %s", what)
        self._refuse(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, _headers_detail(what))

    def _refuse(self, status: HTTPStatus, detail: str, headers: dict[str, str] | None = None) -> None:
        self._answer(_Answer(status, detail, headers or {}))

    def _answer(self, answer: _Answer) -> None:
        """Answer with problem+json and close, without involving the app (it never saw this request)."""
        self.transport.write(_problem_bytes(answer, self.server_state.default_headers, close=True))
        self._disarm()
        if answer.linger and self.transport.can_write_eof():
            self._discarding = True
            self.transport.write_eof()
            self._linger_timer = self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()

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


def pace_after(refusals_in_a_row: int, retry_after_seconds: float) -> float:
    """How long a connection is left unread after its `refusals_in_a_row`-th refusal in a row: 25 ms,
    then twice as long each time, never longer than the refusal's Retry-After."""
    return min(retry_after_seconds, SHED_PACE_SECONDS * 2.0 ** min(refusals_in_a_row - 1, 30))


def _problem_bytes(answer: _Answer, default_headers: list[tuple[bytes, bytes]], *, close: bool) -> bytes:
    body = (
        ProblemDetails(
            title=answer.status.phrase,
            status=int(answer.status),
            detail=answer.detail,
            instance=answer.instance,
            request_id=answer.request_id,
        )
        .model_dump_json(exclude_none=True)
        .encode()
    )
    headers = {**answer.headers, **({"X-Request-ID": answer.request_id} if answer.request_id else {})}
    lines = [
        f"HTTP/1.1 {int(answer.status)} {answer.status.phrase}",
        *(f"{name.decode()}: {value.decode()}" for name, value in default_headers),
        f"Content-Type: {PROBLEM_MEDIA_TYPE}",
        f"Content-Length: {len(body)}",
        *(["Connection: close"] if close else []),
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _headers_detail(what: str) -> str:
    return f"The request line and headers are {what}; send fewer or shorter headers."
