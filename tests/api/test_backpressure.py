"""Under load through real Uvicorn: requests are batched, the bound answers 503 at once, health stays up."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from cats_dogs_other.api import create_app
from cats_dogs_other.inference.classifier import ImageClassifier
from cats_dogs_other.settings import Settings
from tests.api.conftest import ServeProcess, serve_command
from tests.servers import ready_server


class Gate:
    """Holds every model call until opened, counting the calls and their batch sizes."""

    def __init__(self, classifier: ImageClassifier) -> None:
        self.open = threading.Event()
        self.batches: list[int] = []
        self.entered = threading.Semaphore(0)
        self._run = classifier.run
        classifier.run = self  # type: ignore[method-assign]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(len(batch))
        self.entered.release()
        assert self.open.wait(timeout=60)
        return self._run(batch)


def post(base_url: str, data: bytes) -> httpx.Response:
    with httpx.Client(base_url=base_url, timeout=60) as client:
        return client.post("/upload", files={"file": ("dog.png", data)})


def wait_for(condition: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition never met"
        time.sleep(0.01)


def test_concurrent_uploads_are_batched(sample_files: dict[str, Path]) -> None:
    classifier = ImageClassifier.load(threads=1)  # one model call at a time: the rest queue behind it
    app = create_app(Settings(auth_disabled=True, batch_max_size=8, batch_max_wait_ms=0), classifier)
    data = sample_files["Dog"].read_bytes()
    with ready_server(app) as base_url, ThreadPoolExecutor(max_workers=7) as pool:
        gate = Gate(classifier)
        first = pool.submit(post, base_url, data)
        assert gate.entered.acquire(timeout=30)  # the first call holds the model
        rest = [pool.submit(post, base_url, data) for _ in range(6)]
        batcher = app.state.service.model.engine.batcher
        wait_for(lambda: batcher.depth == 6)  # all six decoded and queued behind it
        gate.open.set()
        assert [f.result().json()["prediction"] for f in [first, *rest]] == ["Dog"] * 7
    assert gate.batches == [1, 6]


def test_batches_run_side_by_side_one_per_inference_thread(sample_files: dict[str, Path]) -> None:
    classifier = ImageClassifier.load(threads=2, threads_per_call=1)
    assert classifier.parallel_calls == 2
    app = create_app(Settings(auth_disabled=True, batch_max_size=8, batch_max_wait_ms=0), classifier)
    data = sample_files["Dog"].read_bytes()
    with ready_server(app) as base_url, ThreadPoolExecutor(max_workers=4) as pool:
        gate = Gate(classifier)
        first = pool.submit(post, base_url, data)
        assert gate.entered.acquire(timeout=30)  # one call holds the first thread
        second = pool.submit(post, base_url, data)
        assert gate.entered.acquire(timeout=30)  # and a second call runs beside it, not behind it
        rest = [pool.submit(post, base_url, data) for _ in range(2)]
        batcher = app.state.service.model.engine.batcher
        wait_for(lambda: batcher.depth == 2)  # both threads busy: the next ones queue
        gate.open.set()
        assert [f.result().json()["prediction"] for f in [first, second, *rest]] == ["Dog"] * 4
    assert gate.batches == [1, 1, 2]


def test_full_service_answers_503_at_once_and_recovers(sample_files: dict[str, Path]) -> None:
    classifier = ImageClassifier.load()
    app = create_app(Settings(auth_disabled=True, queue_max=2, batch_max_wait_ms=0), classifier)
    data = sample_files["Cat"].read_bytes()
    with ready_server(app) as base_url, ThreadPoolExecutor(max_workers=2) as pool:
        gate = Gate(classifier)
        held = [pool.submit(post, base_url, data) for _ in range(2)]
        assert gate.entered.acquire(timeout=30)
        wait_for(lambda: app.state.service.model.engine.in_flight == 2)
        refused = post(base_url, data)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["content-type"] == "application/problem+json"
        assert "at capacity" in refused.json()["detail"]
        assert httpx.get(f"{base_url}/health").json() == {"status": "OK"}
        assert not any(f.done() for f in held)
        gate.open.set()
        assert [f.result().status_code for f in held] == [200, 200]
        assert post(base_url, data).status_code == 200  # capacity is given back


@pytest.mark.slow
def test_several_workers_serve_with_the_settings_they_were_given(
    tmp_path: Path, sample_files: dict[str, Path]
) -> None:
    command = serve_command("--workers", "2", "--max-header-bytes", "2048")
    server = ServeProcess(command, tmp_path / "workers.log").start()
    try:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            answers = [
                client.post("/upload", files={"file": ("c.png", sample_files["Cat"].read_bytes())})
                for _ in range(6)
            ]
            assert [a.json()["prediction"] for a in answers] == ["Cat"] * 6
            assert client.get("/version").json()["auth"]["mode"] == "disabled"
            # A flag, not an environment variable: the workers still hold to it.
            assert client.get("/health", headers={"X-Padding": "x" * 3000}).status_code == 431
        wait_for(
            lambda: server.logs().count("model warmed up; ready") == 2, timeout=60
        )  # one model per worker
        assert server.process is not None
        workers = worker_pids(server.process.pid)
        assert len(workers) == 2
        for pid in workers:  # settings reached them pickled, not written into their environment
            environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert not any(entry.startswith(b"MAX_HEADER_BYTES=") for entry in environment)
    finally:
        server.stop()


def worker_pids(supervisor: int) -> list[int]:
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    return [
        int(pid) for pid in children if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
