"""Real servers for tests: an ASGI app under Uvicorn on a free loopback port, in a background thread."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from starlette.types import ASGIApp


class ServerThread:
    """A real Uvicorn server for one app, on a free loopback port, in a background thread."""

    def __init__(self, app: ASGIApp, server: uvicorn.Server | None = None) -> None:
        self.server = server or uvicorn.Server(ServerThread.config(app))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @staticmethod
    def config(app: ASGIApp, **options: object) -> uvicorn.Config:
        return uvicorn.Config(
            app, host="127.0.0.1", port=0, log_config=None, access_log=False, lifespan="on", **options
        )  # type: ignore[arg-type]

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_ok(
    url: str,
    timeout: float,
    still_running: Callable[[], bool] = lambda: True,
    diagnostics: Callable[[], str] = lambda: "",
) -> None:
    """Poll `url` until it answers 200; fail with `diagnostics()` (e.g. the server's log) if the server
    stops or the time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if not still_running() or time.monotonic() > deadline:
            raise RuntimeError(f"{url} never answered 200:\n{diagnostics()}")
        time.sleep(0.1)


def socket_port(base_url: str) -> int:
    return int(base_url.rsplit(":", 1)[1])


@contextmanager
def ready_server(app: ASGIApp, timeout: float = 60) -> Iterator[str]:
    """A ServerThread whose model is loaded and warmed up (`/ready` answers 200) before it is used."""
    with ServerThread(app) as base_url:
        deadline = time.monotonic() + timeout
        while httpx.get(f"{base_url}/ready").status_code != 200:
            if time.monotonic() > deadline:
                raise TimeoutError("the service never became ready")
            time.sleep(0.02)
        yield base_url


class ProcessMemory:
    """A process's resident memory, read from /proc: now (VmRSS) and its peak (VmHWM), which
    `reset_peak` sets back to the current size so that one request's peak can be measured."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def _status_mib(self, key: str) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) / 1024
        raise AssertionError(f"no {key} in /proc/{self.pid}/status")

    def rss_mib(self) -> float:
        return self._status_mib("VmRSS:")

    def peak_mib(self) -> float:
        return self._status_mib("VmHWM:")

    def reset_peak(self) -> float:
        """Reset the peak to the current RSS (Linux clear_refs "5") and return that RSS."""
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        return self.rss_mib()

    def cpu_seconds(self) -> float:
        """CPU time the process has used (user and system, all its threads), from /proc/PID/stat."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def gauge(base_url: str, name: str) -> float:
    """One unlabelled metric's value from a running service's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return float(sample.value)
    raise AssertionError(f"{name} is not in {base_url}/metrics")
