"""A service watched by a real Prometheus: `cats-dogs-other serve` as a process, Debian's `prometheus`
scraping it every second with the shipped rules, and traffic of known answers sent to it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from cats_dogs_other.inference.classifier import ImageClassifier
from tests.api.conftest import ServeProcess, serve_command
from tests.containers import (
    SERVICE_IMAGE,
    ContainerToolMissingError,
    Podman,
    base_image,
    build_image,
    podman_or_skip,
)
from tests.pdfs import flate_image, hand_pdf
from tests.prometheus import PrometheusServer


@dataclass(frozen=True)
class BuiltImage:
    """The service's image, built once a session from the project's Dockerfile with podman."""

    podman: Podman
    name: str
    base: str  # the official python:3.11-slim, or the stand-in where it cannot be pulled
    build_seconds: float


@pytest.fixture(scope="session")
def service_image() -> BuiltImage:
    podman = podman_or_skip()
    try:
        base = base_image(podman)
    except ContainerToolMissingError as missing:
        pytest.skip(reason=f"{missing}: `make test` installs it (Debian mmdebstrap)")
    return BuiltImage(podman, SERVICE_IMAGE, base, build_image(podman, base, SERVICE_IMAGE))


@dataclass
class MonitoredService:
    server: ServeProcess
    prometheus: PrometheusServer
    sha256: str
    training_mix: dict[str, float]
    unsure_below: float
    images: list[Path] = field(default_factory=list)  # the photos the traffic sends
    answers: list[dict[str, Any]] = field(default_factory=list)  # every image answered, PDF images included
    verdicts: list[bool] = field(default_factory=list)  # the feedback sent: right or wrong


def traffic_images(labelled_files: list[tuple[str, Path]]) -> list[Path]:
    """A mix unlike the training data's: four cats, two dogs, one other."""
    wanted = {"Cat": 4, "Dog": 2, "Other": 1}
    chosen: list[Path] = []
    for label, path in labelled_files:
        if wanted.get(label, 0) > 0:
            chosen.append(path)
            wanted[label] -= 1
    return chosen


@pytest.fixture(scope="session")
def monitored_service(
    tmp_path_factory: pytest.TempPathFactory,
    labelled_files: list[tuple[str, Path]],
    classifier: ImageClassifier,
) -> Iterator[MonitoredService]:
    if shutil.which("prometheus") is None:
        pytest.skip(reason="prometheus is not installed: `make test` installs it (Debian prometheus)")
    images = traffic_images(labelled_files)
    tops = sorted(max(p.values) for p in classifier.predict([path.read_bytes() for path in images]))
    middle = len(tops) // 2
    assert tops[middle - 1] < tops[middle], "the images' top values must differ to split them"
    unsure_below = (tops[middle - 1] + tops[middle]) / 2  # about half the answers are unsure
    folder = tmp_path_factory.mktemp("monitored")
    database = f"sqlite:///{folder / 'feedback.db'}"
    command = serve_command("--feedback-allow-anonymous", "--feedback-database-url", database)
    server = ServeProcess(command, folder / "serve.log", env={"UNSURE_BELOW": repr(unsure_below)}).start()
    prometheus = None
    try:
        prometheus = PrometheusServer([f"127.0.0.1:{server.port}"]).start()
        # rate() counts a counter from its first sample on. The answer counters start at 0: two scrapes of
        # them first, so every answer is an increase (and rate() extrapolates every label alike). The
        # request counters appear with their first request: one of each kind, then two more scrapes.
        assert prometheus.wait_for("count_over_time(cdo_predictions_total[1m]) >= 2"), prometheus.logs()
        service = MonitoredService(
            server, prometheus, classifier.sha256, classifier.card.training_mix(), unsure_below, images
        )
        service.answers.extend(warm_up(server.base_url, images[0]))
        baseline = 'count(count_over_time(cdo_http_requests_total{route=~"/upload|/predict"}[1m]) >= 2) >= 3'
        assert prometheus.wait_for(baseline), prometheus.logs()
        send_traffic(service, images, labelled_files)
        yield service
    finally:
        if prometheus is not None:
            prometheus.stop()
        server.stop()


def warm_up(base_url: str, image: Path) -> list[dict[str, Any]]:
    """One request of each kind the traffic sends; their answers."""
    with httpx.Client(base_url=base_url, timeout=30) as client:
        uploaded = client.post("/upload", files={"file": (image.name, image.read_bytes())})
        assert client.post("/upload", files={"file": ("notes.txt", b"plain text")}).status_code == 415
        listed = client.post("/predict", files=[("files", (image.name, image.read_bytes()))])
    assert uploaded.status_code == listed.status_code == 200
    return [uploaded.json(), listed.json()[0]]


def send_traffic(service: MonitoredService, images: list[Path], labelled: list[tuple[str, Path]]) -> None:
    base = service.server.base_url
    with httpx.Client(base_url=base, timeout=30) as client:
        uploaded = []
        for path in images:
            answer = client.post("/upload", files={"file": (path.name, path.read_bytes())})
            assert answer.status_code == 200, answer.text
            uploaded.append(answer.json())
        service.answers.extend(uploaded)
        dog = next(path for label, path in labelled if label == "Dog")
        document = hand_pdf([[flate_image(Image.open(dog).convert("RGB"))]])
        listed = client.post("/predict", files=[("files", ("doc.pdf", document))])
        assert listed.status_code == 200, listed.text
        service.answers.extend(listed.json()[0]["images"])
        assert client.post("/upload", files={"file": ("notes.txt", b"plain text")}).status_code == 415
        # Feedback on three answers: two confirmed, one corrected.
        for path, answer, right in zip(images[:3], uploaded[:3], (True, True, False), strict=True):
            label = (
                answer["prediction"]
                if right
                else next(x for x in ("Cat", "Dog") if x != answer["prediction"])
            )
            stored = client.post(
                "/feedback",
                files={"file": (path.name, path.read_bytes())},
                data={"label": label, "predicted": answer["prediction"], "model_sha256": service.sha256},
            )
            assert stored.status_code == 201, stored.text
            service.verdicts.append(right)
