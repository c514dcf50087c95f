"""`make serve` installs the serving runtime only: run it for real, into a fresh virtual environment."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.api.conftest import ServeProcess
from tests.conftest import REPO_ROOT
from tests.images import heic

# What only training, the course's Keras files, the registry or the test suite need.
NOT_FOR_SERVING = {"torch", "keras", "mlflow", "mlflow-skinny", "tensorflow", "pytest", "playwright", "onnx"}
# Opt-in extras (pyproject.toml): not in a plain install.
OPT_IN = {"pi-heif", "pi_heif"}


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")
def test_make_serve_installs_only_the_runtime_and_serves(
    tmp_path: Path, sample_files: dict[str, Path]
) -> None:
    venv = tmp_path / "venv"
    command = [
        "make",
        "--no-print-directory",
        "-C",
        str(REPO_ROOT),
        "serve",
        f"VENV={venv}",
        f"FEEDBACK_DB=sqlite:///{tmp_path / 'feedback.db'}",
    ]
    # `make serve` starts on PORT (8080 unless set): ServeProcess sets a free one.
    server = ServeProcess(
        command,
        tmp_path / "make-serve.log",
        env={"SHUTDOWN_DRAIN_SECONDS": "0"},  # no load balancer to wait for
        ready_timeout=600,
        process_group=True,
    )
    cat_image = Image.open(sample_files["Cat"]).convert("RGB")
    server.start()
    try:
        with open(sample_files["Dog"], "rb") as image:
            answer = httpx.post(f"{server.base_url}/upload", files={"file": image}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["prediction"] == "Dog"  # the default model, without the training stack
        assert httpx.get(f"{server.base_url}/version").json()["feedback"]["enabled"] is True
        # Without the `heic` extra, an iPhone's photo is refused with the way to accept it.
        refused = httpx.post(f"{server.base_url}/upload", files={"file": heic(cat_image)}, timeout=30)
        assert refused.status_code == 415, refused.text
        assert "pip install 'cats-dogs-other[heic]'" in refused.json()["detail"]
    finally:
        server.stop()
    listed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = {package["name"].lower() for package in json.loads(listed)}
    assert {"cats-dogs-other", "onnxruntime", "fastapi", "uvicorn"} <= names
    assert not names & (NOT_FOR_SERVING | OPT_IN), names & (NOT_FOR_SERVING | OPT_IN)
    assert not (venv / ".installed").exists()  # the full install (make install) did not run
