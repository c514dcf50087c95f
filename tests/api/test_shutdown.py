"""Graceful shutdown and slow clients, through real Uvicorn: nothing in flight is lost, nothing pins us."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from cats_dogs_other.api import create_app
from cats_dogs_other.inference.classifier import ImageClassifier
from cats_dogs_other.server import DrainingServer, LimitedHttpProtocol, ProtocolLimits
from cats_dogs_other.settings import Settings
from tests.api.conftest import ServeProcess, serve_command
from tests.api.test_backpressure import Gate, post, wait_for
from tests.servers import ServerThread, ready_server, socket_port


@pytest.mark.parametrize("drain_seconds", [0.0, 1.0])
def test_sigterm_lets_in_flight_requests_finish(sample_files: dict[str, Path], drain_seconds: float) -> None:
    classifier = ImageClassifier.load()
    app = create_app(Settings(auth_disabled=True), classifier)
    server = DrainingServer(
        ServerThread.config(app, timeout_graceful_shutdown=30), app.state.service, drain_seconds
    )
    data = sample_files["Dog"].read_bytes()
    thread = ServerThread(app, server)
    with thread as base_url, ThreadPoolExecutor(max_workers=3) as pool:
        wait_for(lambda: httpx.get(f"{base_url}/ready").status_code == 200)
        gate = Gate(classifier)
        in_flight = [pool.submit(post, base_url, data) for _ in range(3)]
        assert gate.entered.acquire(timeout=30)
        wait_for(lambda: app.state.service.model.engine.in_flight == 3)
        server.handle_exit(signal.SIGTERM, None)
        if drain_seconds:
            ready = httpx.get(f"{base_url}/ready")  # still listening, but telling balancers to go away
            assert ready.status_code == 503
            assert "shutting down" in ready.json()["detail"]
            assert httpx.get(f"{base_url}/health").status_code == 200
        gate.open.set()
        assert [f.result().json()["prediction"] for f in in_flight] == ["Dog"] * 3
        thread.thread.join(timeout=30)
        assert not thread.thread.is_alive()  # the server exited once they were answered


@pytest.mark.slow
def test_real_process_drains_on_sigterm_and_exits_cleanly(
    tmp_path: Path, sample_files: dict[str, Path]
) -> None:
    command = serve_command()
    server = ServeProcess(command, tmp_path / "serve.log", env={"SHUTDOWN_DRAIN_SECONDS": "1.5"}).start()
    assert server.process is not None
    data = sample_files["Cat"].read_bytes()
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = [pool.submit(post, server.base_url, data) for _ in range(8)]
        server.process.send_signal(signal.SIGTERM)
        assert httpx.get(f"{server.base_url}/ready", timeout=5).status_code == 503
        assert [a.result().status_code for a in answers] == [200] * 8
        late = post(server.base_url, data)  # during the drain, requests are still served
        assert late.status_code == 200
    # Uvicorn re-raises the signal once its graceful shutdown is done, so the status says SIGTERM.
    assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)
    server.stop()
    assert "/ready answers 503" in server.logs()
    assert "Application shutdown complete" in server.logs()


def test_slow_headers_get_the_connection_closed(classifier: ImageClassifier) -> None:
    settings = Settings(auth_disabled=True, header_timeout_seconds=0.5)
    app = create_app(settings, classifier)
    config = ServerThread.config(
        app, http=LimitedHttpProtocol.with_limits(ProtocolLimits.from_settings(settings))
    )
    with ServerThread(app, __import__("uvicorn").Server(config)) as base_url:
        port = socket_port(base_url)
        for opening in (b"", b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Ty"):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(opening)
                started = time.monotonic()
                assert sock.recv(1024) == b""  # closed by the server, not by our timeout
                assert time.monotonic() - started < 5
        assert httpx.get(f"{base_url}/health").status_code == 200  # normal clients are unaffected


def test_stalled_body_is_408(classifier: ImageClassifier) -> None:
    app = create_app(Settings(auth_disabled=True, body_timeout_seconds=0.5), classifier)
    with (
        ready_server(app) as base_url,
        socket.create_connection(("127.0.0.1", socket_port(base_url)), timeout=10) as sock,
    ):
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 100000\r\n\r\n--b\r\n"
        )
        answer = sock.recv(65536).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 408")
    assert "application/problem+json" in answer
    assert "stalled" in answer


def test_truncated_multipart_is_400(client: object) -> None:
    body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\npartial bytes'
    response = client.post(
        "/upload",
        content=body,  # type: ignore[attr-defined]
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert response.status_code == 400
    assert "truncated" in response.json()["detail"]


def test_wrong_boundary_is_400(client: object, sample_files: dict[str, Path]) -> None:
    body = (
        b'--other\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'
        + sample_files["Cat"].read_bytes()
        + b"\r\n--other--\r\n"
    )
    response = client.post(
        "/upload",
        content=body,  # type: ignore[attr-defined]
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert response.status_code == 400


def test_serve_flags_reach_the_server() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cats_dogs_other.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "--batch-max-size" in done.stdout
    assert "--workers" in done.stdout
