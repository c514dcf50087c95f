"""Shared fixtures: the course's real dataset (read in place, never copied), the default classifier, and
the feedback databases (a SQLite file, a real PostgreSQL server), and a real MLflow server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cats_dogs_other.inference.classifier import ImageClassifier
from tests.postgres import PostgresServer, postgres_bin_dir
from tests.servers import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
DATASET_ROOT = Path(
    os.environ.get("CATS_DOGS_OTHER_DATASET", REPO_ROOT.parent / "shared" / "datasets" / "cats-dogs-other")
)
# The suite runs as in the Deployment's pod (768 MiB), whatever memory limit the machine running it has:
# the budgets it checks derive from it (tests/deploy/test_image.py checks a real cgroup's limit instead).
os.environ.setdefault("MEMORY_LIMIT_BYTES", str(768 << 20))
IMAGES_DIR = DATASET_ROOT / "images"
PDFS_DIR = DATASET_ROOT / "pdfs"
ANNOTATIONS_FILE = DATASET_ROOT / "annotations.json"


@pytest.fixture(scope="session")
def dataset_dir() -> Path:
    if not IMAGES_DIR.is_dir():
        reason = f"the course's dataset is absent: {IMAGES_DIR} (set CATS_DOGS_OTHER_DATASET to its folder)"
        pytest.skip(reason=reason)
    return IMAGES_DIR


@pytest.fixture(scope="session")
def labelled_files(dataset_dir: Path) -> list[tuple[str, Path]]:
    """(label as served, path) for every image of the dataset."""
    return [
        (folder.name.capitalize(), path)
        for folder in sorted(dataset_dir.iterdir())
        if folder.is_dir()
        for path in sorted(folder.glob("*.png"))
    ]


@pytest.fixture(scope="session")
def sample_files(dataset_dir: Path) -> dict[str, Path]:
    """One clear image of each class."""
    return {
        label: sorted((dataset_dir / label.lower()).glob("*.png"))[0] for label in ("Cat", "Dog", "Other")
    }


@pytest.fixture(scope="session")
def course_pdfs(dataset_dir: Path) -> list[Path]:
    """The course's 23 source documents, as it ships them."""
    return sorted(PDFS_DIR.glob("*.pdf"))


@pytest.fixture(scope="session")
def course_annotations(dataset_dir: Path) -> dict[str, str]:
    """The labelling tool's export: image file name (`{document}_page{p}_index{i}.png`) -> label."""
    export = json.loads(ANNOTATIONS_FILE.read_text())
    return {entry["fileName"]: entry["annotation"]["label"] for entry in export["annotations"]}


@pytest.fixture(scope="session")
def classifier() -> ImageClassifier:
    return ImageClassifier.load()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the session (`make test` installs Debian's package when missing)."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip(reason="PostgreSQL is not installed: `make test` installs it (Debian postgresql)")
    server = PostgresServer(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture(params=["sqlite", "postgresql"])
def feedback_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty feedback database: a SQLite file, or a new database on the session's PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'feedback' / 'feedback.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_database()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` on loopback: SQLite backend store, local artifact store; stopped at the end."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (root / "server.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{root}/mlflow.db",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=root,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"mlflow server did not start:\n{(root / 'server.log').read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
