"""Overload is refused in the HTTP protocol, before the app: real Uvicorn with `LimitedHttpProtocol`, the
model held by a gate so the service is full for as long as a test needs."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from cats_dogs_other.api import create_app
from cats_dogs_other.inference.classifier import ImageClassifier
from cats_dogs_other.server.protocol import LimitedHttpProtocol, ProtocolLimits
from cats_dogs_other.settings import Settings
from tests.api.conftest import ServeProcess, serve_command
from tests.api.test_backpressure import Gate, post, wait_for
from tests.servers import ServerThread

BOUNDARY = "overloadBoundary"


@contextmanager
def protocol_server(app: FastAPI, settings: Settings) -> Iterator[str]:
    """The app behind the protocol `serve` uses, in a thread of this process (so a gate can hold it)."""
    limits = LimitedHttpProtocol.with_limits(ProtocolLimits.from_settings(settings))
    server = uvicorn.Server(ServerThread.config(app, http=limits))
    with ServerThread(app, server) as base_url:
        wait_for(lambda: httpx.get(f"{base_url}/ready").status_code == 200)
        yield base_url


@pytest.fixture
def full_service(sample_files: dict[str, Path]) -> Iterator[tuple[str, FastAPI, Gate, bytes]]:
    """QUEUE_MAX=2, both places taken by uploads the gate holds in the model."""
    classifier = ImageClassifier.load(threads=1)
    settings = Settings(auth_disabled=True, queue_max=2, batch_max_size=1, batch_max_wait_ms=0)
    app = create_app(settings, classifier)
    data = sample_files["Cat"].read_bytes()
    with protocol_server(app, settings) as base_url, ThreadPoolExecutor(max_workers=2) as pool:
        gate = Gate(classifier)
        held = [pool.submit(post, base_url, data) for _ in range(2)]
        assert gate.entered.acquire(timeout=30)
        wait_for(lambda: app.state.service.model.engine.in_flight == 2)
        yield base_url, app, gate, data
        gate.open.set()
        assert [f.result().status_code for f in held] == [200, 200]


def multipart(data: bytes) -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="c.png"\r\n\r\n'.encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def request_head(length: int, *extra: str) -> bytes:
    lines = [
        "POST /upload HTTP/1.1",
        "Host: x",
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}",
        f"Content-Length: {length}",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Responses:
    """HTTP/1.1 responses read off one socket, one at a time (pipelined ones may share a read)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, f"connection closed before a response: {self.buffer!r}"
        self.buffer += chunk

    def next(self) -> tuple[str, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            self._more()
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        status, *lines = head.decode().split("\r\n")
        headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
        length = int(headers["content-length"])
        while len(rest) < length:
            self._more()
            rest = self.buffer.partition(b"\r\n\r\n")[2]
        self.buffer = rest[length:]
        return status, headers, rest[:length]


def read_response(sock: socket.socket) -> tuple[str, dict[str, str], bytes]:
    return Responses(sock).next()


def test_a_full_service_refuses_in_the_protocol_before_reading_the_body(
    full_service: tuple[str, FastAPI, Gate, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    base_url, _, _, data = full_service
    body = multipart(data)
    port = int(base_url.rsplit(":", 1)[1])
    with (
        caplog.at_level(logging.INFO, logger="cats_dogs_other.access"),
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
    ):
        sock.sendall(request_head(len(body), "X-Request-ID: shed-1"))  # the headers only, no body yet
        status, headers, answer = read_response(sock)
        assert status == "HTTP/1.1 503 Service Unavailable"  # answered before the body was sent
        assert headers["content-type"] == "application/problem+json"
        assert headers["retry-after"] == "1"
        assert headers["x-request-id"] == "shed-1"
        assert "connection" not in headers  # kept open: the body is read and dropped
        problem = json.loads(answer)
        assert (problem["status"], problem["instance"], problem["request_id"]) == (
            503,
            "/upload",
            "shed-1",
        )
        assert "at capacity" in problem["detail"]
        sock.sendall(body)  # the body the client was sending anyway
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")  # the connection still works
        status, _, answer = read_response(sock)
        assert (status, json.loads(answer)) == ("HTTP/1.1 200 OK", {"status": "OK"})
    assert not [r for r in caplog.records if getattr(r, "path", None) == "/upload"]  # the app never saw it
    metrics = httpx.get(f"{base_url}/metrics").text
    assert 'cdo_http_requests_total{method="POST",route="/upload",status="503"} 1.0' in metrics


@pytest.mark.parametrize(
    "extra",
    [("Expect: 100-continue",), ("Connection: close",)],
    ids=["waiting-for-100-continue", "connection-close"],
)
def test_a_shed_client_that_sends_no_body_or_leaves_gets_its_503_then_the_connection_closes(
    full_service: tuple[str, FastAPI, Gate, bytes], extra: tuple[str, ...]
) -> None:
    base_url, *_ = full_service
    port = int(base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request_head(50_000, *extra))
        status, headers, _ = read_response(sock)
        assert (status[:12], headers["connection"]) == ("HTTP/1.1 503", "close")
        sock.settimeout(5)
        assert sock.recv(1024) == b""  # an orderly close (FIN), after the answer: no reset


def test_a_shed_request_with_a_large_body_is_answered_and_closed_without_reading_it(
    full_service: tuple[str, FastAPI, Gate, bytes],
) -> None:
    base_url, *_ = full_service
    port = int(base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request_head(8_000_000) + b"x" * 100_000)  # 8 MB declared, 100 KB sent
        status, headers, _ = read_response(sock)
        assert (status[:12], headers["connection"]) == ("HTTP/1.1 503", "close")


def test_places_are_given_back_whatever_ends_the_request(
    full_service: tuple[str, FastAPI, Gate, bytes], sample_files: dict[str, Path]
) -> None:
    base_url, app, gate, data = full_service
    engine = app.state.service.model.engine
    gate.open.set()
    wait_for(lambda: engine.in_flight == 0)
    with httpx.Client(base_url=base_url, timeout=30) as client:
        assert client.post("/upload", files={"file": ("c.png", data)}).status_code == 200
        assert client.post("/upload", files={"file": ("t.txt", b"not an image")}).status_code == 415
        assert (
            client.post("/upload", content=b"{}", headers={"Content-Type": "application/json"}).status_code
            == 415
        )
    port = int(base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:  # over MAX_UPLOAD_BYTES
        sock.sendall(request_head(20 << 20))
        assert read_response(sock)[0].startswith("HTTP/1.1 413")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:  # a client that leaves
        sock.sendall(request_head(100_000) + b"partial")
    wait_for(lambda: engine.in_flight == 0)
    assert engine.admission.in_flight == 0


def test_health_is_answered_by_the_protocol_like_the_route(
    full_service: tuple[str, FastAPI, Gate, bytes],
) -> None:
    base_url, app, *_ = full_service
    port = int(base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Request-ID: probe-7\r\n\r\n" * 3)  # pipelined
        responses = Responses(sock)
        answers = [responses.next() for _ in range(3)]
    for status, headers, body in answers:
        assert status == "HTTP/1.1 200 OK"
        assert (headers["content-type"], headers["x-request-id"]) == ("application/json", "probe-7")
        assert json.loads(body) == {"status": "OK"}
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.0\r\n\r\n")
        status, headers, _ = read_response(sock)
        assert headers["connection"] == "close"
        sock.settimeout(5)
        assert sock.recv(1024) == b""
    # The route answers the same where no protocol is in front (the app alone, tests' clients).
    from fastapi.testclient import TestClient

    assert TestClient(app).get("/health").json() == {"status": "OK"}
    assert 'route="/health",status="200"} 5.0' in httpx.get(f"{base_url}/metrics").text


@pytest.mark.slow
def test_a_burst_past_capacity_gets_only_200_and_503_and_every_place_back(
    tmp_path: Path, sample_files: dict[str, Path]
) -> None:
    """A real `serve` with a tight wait budget, 48 clients at once, a few rounds each."""
    command = serve_command("--max-queue-wait-ms", "20", "--queue-max", "8")
    server = ServeProcess(command, tmp_path / "serve.log").start()
    data = sample_files["Dog"].read_bytes()

    def client(_: int) -> list[int]:
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            return [http.post("/upload", files={"file": ("d.png", data)}).status_code for _ in range(4)]

    try:
        with ThreadPoolExecutor(max_workers=48) as pool:
            statuses = [status for answers in pool.map(client, range(48)) for status in answers]
        assert set(statuses) == {200, 503}, sorted(set(statuses))
        metrics = httpx.get(f"{server.base_url}/metrics").text
        assert "cdo_inference_requests_in_progress 0.0" in metrics
        assert "Invalid HTTP request" not in server.logs()  # refusals are not parse errors
    finally:
        server.stop()


def test_the_protocol_admits_exactly_the_prediction_routes(classifier: ImageClassifier) -> None:
    """What the app's lifespan hands the transport (api/handoff.py): the routes it admits."""
    import asyncio

    from cats_dogs_other.api.handoff import TRANSPORT_STATE_KEY, TransportState
    from cats_dogs_other.server.shedding import LoadShedder

    app = create_app(Settings(auth_disabled=True), classifier)

    async def handed_over() -> dict[str, object]:
        async with app.router.lifespan_context(app) as lifespan_state:
            return dict(lifespan_state or {})

    app_state = asyncio.run(handed_over())
    assert isinstance(app_state[TRANSPORT_STATE_KEY], TransportState)
    shedder = LoadShedder.of(app_state)
    assert shedder is not None
    assert LoadShedder.of(app_state) is shedder  # built once, shared by every connection
    assert {route.template for route in shedder.routes} == {
        "/upload",
        "/predict",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
    }  # feedback is admitted apart (its rate is its database's), health and metrics never
