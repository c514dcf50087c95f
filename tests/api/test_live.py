"""The service through real Uvicorn on loopback: the console entry point, boot.py, logs and concurrency."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from cats_dogs_other.api import create_app
from cats_dogs_other.inference.classifier import ImageClassifier
from cats_dogs_other.settings import Settings
from tests.api.conftest import REPO_ROOT, ServeProcess
from tests.servers import ServerThread


def test_serve_answers_the_course_contract(live_server: ServeProcess, sample_files: dict[str, Path]) -> None:
    with httpx.Client(base_url=live_server.base_url, timeout=30) as client:
        assert client.get("/health").json() == {"status": "OK"}
        for label, path in sample_files.items():
            response = client.post("/upload", files={"file": (path.name, path.read_bytes(), "image/png")})
            assert response.json()["prediction"] == label
        batch = client.post(
            "/predict", files=[("files", (p.name, p.read_bytes())) for p in sample_files.values()]
        )
        assert [r["prediction"] for r in batch.json()] == list(sample_files)
        assert client.get("/docs").status_code == 200
        assert client.get("/version").json()["auth"]["mode"] == "disabled"
        problem = client.post("/upload", files={"file": ("x.png", b"nope")})
        assert problem.status_code == 415
        assert problem.headers["content-type"] == "application/problem+json"


def test_logs_are_json_lines_without_tokens_or_image_bytes(
    live_server: ServeProcess, sample_files: dict[str, Path]
) -> None:
    secret = "eyJhbGciOiJSUzI1NiJ9.SECRET-TOKEN-MARKER.c2lnbmF0dXJl"
    marker = "IMAGE-BYTES-MARKER-6f1c"
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", marker)
    image = Image.open(sample_files["Cat"])
    path = live_server.log_path.parent / "marked.png"
    image.save(path, pnginfo=info)
    with httpx.Client(base_url=live_server.base_url, timeout=30) as client:
        response = client.post(
            "/upload?token=" + secret,
            files={"file": ("marked.png", path.read_bytes())},
            headers={"Authorization": f"Bearer {secret}", "X-Request-ID": "log-check-1"},
        )
        assert response.status_code == 200
        client.post("/upload", files={"file": ("bad.png", marker.encode())}, headers={"Cookie": secret})
    logs = live_server.logs()
    assert "SECRET-TOKEN-MARKER" not in logs
    assert marker not in logs
    entries = [json.loads(line) for line in logs.splitlines() if line.strip()]
    access = [e for e in entries if e.get("request_id") == "log-check-1"]
    assert len(access) == 1
    assert access[0]["path"] == "/upload"
    assert access[0]["status"] == 200
    assert access[0]["duration_ms"] >= 0
    assert any(e["message"].startswith("AUTHENTICATION IS DISABLED") for e in entries)


def test_the_model_is_announced_in_one_short_line(live_server: ServeProcess) -> None:
    sha256 = httpx.get(f"{live_server.base_url}/version", timeout=30).json()["model"]["sha256"]
    entries = [json.loads(line) for line in live_server.logs().splitlines() if line.strip()]
    (loaded,) = [
        e["message"] for e in entries if e["message"].startswith("model ") and "sha256" in e["message"]
    ]
    assert f"sha256 {sha256[:12]}" in loaded
    assert "builtin:default" in loaded  # where it came from
    assert len(loaded) < 200  # name, hash and source; not the whole model card


def test_health_answers_while_uploads_are_in_flight(sample_files: dict[str, Path]) -> None:
    # Hold every inference at a gate: if the event loop were blocked, /health could not answer.
    classifier = ImageClassifier.load()
    gate = threading.Event()
    entered = threading.Semaphore(0)
    real_run = classifier.run

    def gated_run(batch: np.ndarray) -> np.ndarray:
        entered.release()
        assert gate.wait(timeout=60)
        return real_run(batch)

    app = create_app(Settings(auth_disabled=True), classifier)
    with ServerThread(app) as base_url, ThreadPoolExecutor(max_workers=8) as pool:
        with httpx.Client(base_url=base_url) as probe:
            while probe.get("/ready").status_code != 200:
                pass
        classifier.run = gated_run  # type: ignore[method-assign]
        data = sample_files["Dog"].read_bytes()

        def upload() -> httpx.Response:
            with httpx.Client(base_url=base_url, timeout=60) as client:
                return client.post("/upload", files={"file": ("dog.png", data)})

        uploads = [pool.submit(upload) for _ in range(8)]
        assert entered.acquire(timeout=30)  # at least one upload is inside the model
        with httpx.Client(base_url=base_url, timeout=10) as probe:
            for _ in range(5):
                assert probe.get("/health").json() == {"status": "OK"}
        assert not any(u.done() for u in uploads)  # all eight were still in flight
        gate.set()
        assert [u.result().json()["prediction"] for u in uploads] == ["Dog"] * 8


def test_serve_with_a_missing_model_exits_at_start(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cats_dogs_other.cli",
            "serve",
            "--no-auth",
            "--model",
            str(tmp_path / "x.onnx"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "Model file not found" in done.stderr


def test_serve_with_invalid_settings_exits_at_start() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cats_dogs_other.cli", "serve", "--port", "70000"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "port" in done.stderr


@pytest.mark.slow
def test_boot_py_serves_like_the_course(tmp_path: Path, sample_files: dict[str, Path]) -> None:
    server = ServeProcess(
        [sys.executable, str(REPO_ROOT / "boot.py")], tmp_path / "boot.log", env={"AUTH_DISABLED": "true"}
    ).start()
    try:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            assert client.get("/health").json() == {"status": "OK"}
            response = client.post("/upload", files={"file": ("c.png", sample_files["Cat"].read_bytes())})
            assert response.json()["prediction"] == "Cat"
    finally:
        server.stop()
