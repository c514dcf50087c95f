"""Fixtures for the HTTP API: in-process apps, a real Uvicorn in a thread, and a real `serve` process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from cats_dogs_other.api import create_app
from cats_dogs_other.inference.classifier import ImageClassifier
from cats_dogs_other.settings import Settings
from tests.servers import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


def wait_until_ready(client: TestClient | httpx.Client, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if client.get("/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError("the service never became ready")


def client_factory(
    classifier: ImageClassifier, defaults: dict[str, object]
) -> Iterator[Callable[..., TestClient]]:
    """Started apps (lifespan run, model warmed) from `defaults` plus per-call settings overrides."""
    clients: list[TestClient] = []

    def build(**overrides: object) -> TestClient:
        settings = Settings(**{**defaults, **overrides})  # type: ignore[arg-type]
        client = TestClient(create_app(settings, classifier), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        wait_until_ready(client)
        return client

    yield build
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def make_client(classifier: ImageClassifier) -> Iterator[Callable[..., TestClient]]:
    """Apps with auth off, with the given settings overrides."""
    yield from client_factory(classifier, {"auth_disabled": True})


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


class ServeProcess:
    """`cats-dogs-other serve` (or another command) as a real process; its stderr is kept for log checks."""

    def __init__(
        self,
        command: list[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        *,
        ready_timeout: float = 60,
        process_group: bool = False,
    ) -> None:
        self.ready_timeout = ready_timeout
        self.process_group = process_group  # signal the whole group (a `make` and the server it runs)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.command = [part.replace("{port}", str(self.port)) for part in command]
        # No load balancer to wait for: SIGTERM stops at once unless a test sets a drain it checks.
        self.env = {"SHUTDOWN_DRAIN_SECONDS": "0", **os.environ, **(env or {}), "PORT": str(self.port)}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServeProcess:
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.command,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=self.process_group,
        )
        with httpx.Client(base_url=self.base_url, timeout=5) as client:
            deadline = time.monotonic() + self.ready_timeout
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited early:\n{self.log_path.read_text()}")
                try:
                    if client.get("/ready").status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        raise TimeoutError(f"server never became ready:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.process.wait()
        self.log.close()

    def _signal(self, number: signal.Signals) -> None:
        assert self.process is not None
        if self.process_group:
            os.killpg(self.process.pid, number)
        else:
            self.process.send_signal(number)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


def serve_command(*extra: str) -> list[str]:
    """`cats-dogs-other serve` with auth off on loopback; ServeProcess fills in the free port."""
    return [
        sys.executable,
        "-m",
        "cats_dogs_other.cli",
        "serve",
        "--no-auth",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        *extra,
    ]


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """The real console entry point, as `make serve` runs it (auth off), on a free port."""
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    command = serve_command()
    server = ServeProcess(command, log_path).start()
    yield server
    server.stop()
