"""/metrics: checked for content, not just for a 200."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from cats_dogs_other.api import create_app
from cats_dogs_other.inference.classifier import ImageClassifier
from cats_dogs_other.settings import Settings
from tests.images import encode
from tests.pdfs import flate_image, hand_pdf


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_requests_batches_and_model_calls(
    client: TestClient, sample_files: dict[str, Path]
) -> None:
    before = samples(client.get("/metrics").text)
    for label in ("Cat", "Dog"):
        client.post("/upload", files={"file": ("x.png", sample_files[label].read_bytes())})
    client.post("/upload", files={"file": ("x.png", b"not an image")})
    client.get("/no/such/path/42")
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    after = samples(response.text)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("cdo_http_requests_total", method="POST", route="/upload", status="200") == 2
    assert delta("cdo_http_requests_total", method="POST", route="/upload", status="415") == 1
    assert delta("cdo_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert not any("/no/such/path" in str(key) for key in after)  # no series per unknown path
    assert delta("cdo_http_request_duration_seconds_count", method="POST", route="/upload", status="200") == 2
    assert delta("cdo_inference_batch_size_count") == 2
    assert delta("cdo_inference_batch_size_sum") == 2
    assert delta("cdo_inference_queue_wait_seconds_count") == 2
    assert delta("cdo_model_inference_seconds_count") == 2
    assert value(after, "cdo_inference_queue_depth") == 0
    assert value(after, "cdo_inference_requests_in_progress") == 0
    info = [key for key in after if key[0] == "cdo_model_info"]
    assert len(info) == 1
    assert dict(info[0][1])["name"] == "cats-dogs-other-efficientnet-lite0"
    assert re.fullmatch(r"[0-9a-f]{64}", dict(info[0][1])["sha256"])


def test_answers_are_counted_by_label_with_how_sure_the_model_was(
    make_client: Callable[..., TestClient], classifier: ImageClassifier, sample_files: dict[str, Path]
) -> None:
    """Every classified image (PDF images included) counts under the served model's sha256 and the label
    it chose; answers under UNSURE_BELOW count as unsure; image sizes are the sizes sent."""
    images = {label: path.read_bytes() for label, path in sample_files.items()}
    tops = sorted(max(p.values) for p in classifier.predict(list(images.values())))
    threshold = (tops[0] + tops[-1]) / 2  # some answers above it, some below
    client = make_client(unsure_below=threshold)
    sha = classifier.sha256
    before = samples(client.get("/metrics").text)
    photo = Image.new("RGB", (640, 480), (40, 120, 200))
    document = hand_pdf([[flate_image(Image.open(sample_files["Dog"]).convert("RGB"))]])
    answers = []
    for data in images.values():
        answers.append(client.post("/upload", files={"file": ("x.png", data)}).json())
    answers.append(client.post("/upload", files={"file": ("blue.jpg", encode(photo, "JPEG"))}).json())
    listed = client.post("/predict", files=[("files", ("doc.pdf", document))]).json()
    answers.extend(listed[0]["images"])
    client.post("/upload", files={"file": ("x.png", b"not an image")})  # refused: no answer to count
    after = samples(client.get("/metrics").text)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    for label in classifier.labels:
        chosen = sum(answer["prediction"] == label for answer in answers)
        assert delta("cdo_predictions_total", model_sha256=sha, label=label) == chosen
    assert delta("cdo_prediction_top_value_count", model_sha256=sha) == len(answers)
    top_sum = sum(max(answer["values"]) for answer in answers)
    assert abs(delta("cdo_prediction_top_value_sum", model_sha256=sha) - top_sum) < 1e-4
    unsure = sum(max(answer["values"]) < threshold for answer in answers)
    assert 0 < unsure < len(answers)
    assert delta("cdo_predictions_unsure_total", model_sha256=sha) == unsure
    assert value(after, "cdo_prediction_unsure_below", model_sha256=sha) == threshold
    sizes = [Image.open(io.BytesIO(data)).size for data in images.values()]
    sizes += [photo.size, Image.open(sample_files["Dog"]).size]
    assert delta("cdo_image_pixels_count", model_sha256=sha) == len(answers)
    assert delta("cdo_image_pixels_sum", model_sha256=sha) == sum(w * h for w, h in sizes)


def test_the_training_mix_and_validation_accuracy_come_from_the_model_card(
    client: TestClient, classifier: ImageClassifier
) -> None:
    found = samples(client.get("/metrics").text)
    counts = classifier.card.training["images_per_label"]
    sha = classifier.sha256
    shares = {
        label: value(found, "cdo_model_training_label_share", model_sha256=sha, label=label)
        for label in classifier.labels
    }
    assert shares == pytest.approx({label: counts[label] / sum(counts.values()) for label in counts})
    accuracy = classifier.card.metrics["pdf_grouped"]["accuracy"]
    assert value(found, "cdo_model_validation_accuracy", model_sha256=sha) == accuracy
    for label in classifier.labels:  # every label has a series from the start, chosen or not
        assert ("cdo_predictions_total", (("label", label), ("model_sha256", sha))) in found


def test_a_card_without_a_training_mix_publishes_none(classifier: ImageClassifier, tmp_path: Path) -> None:
    """A model whose card does not record its training data (a Keras file served as the course did)
    has no training mix to compare with: no invented one."""
    card = classifier.card.model_copy(update={"training": {}, "metrics": {}})
    assert card.training_mix() == {}
    assert card.validation_accuracy() is None
    other = ImageClassifier.load(classifier.model_path, card=card)
    with TestClient(create_app(Settings(auth_disabled=True), other)) as client:
        names = {name for name, _ in samples(client.get("/metrics").text)}
    assert "cdo_model_training_label_share" not in names
    assert "cdo_model_validation_accuracy" not in names
    assert "cdo_predictions_total" in names


def test_feedback_counters_start_at_zero_when_feedback_is_on(
    make_client: Callable[..., TestClient], classifier: ImageClassifier, tmp_path: Path
) -> None:
    """rate() counts a counter from its first sample on: a verdict series born with its first verdict
    would lose that verdict from the live accuracy. With feedback on, they exist from the start."""
    client = make_client(feedback_database_url=f"sqlite:///{tmp_path / 'feedback.db'}")
    found = samples(client.get("/metrics").text)
    for verdict in ("right", "wrong"):
        key = ("cdo_feedback_verdicts_total", (("model_sha256", classifier.sha256), ("verdict", verdict)))
        assert found[key] == 0
    assert found[("cdo_feedback_total", (("label", "Dog"), ("predicted", "unknown")))] == 0
    off = samples(make_client().get("/metrics").text)
    assert not any(name == "cdo_feedback_verdicts_total" for name, _ in off)


def test_answers_finishing_on_the_old_model_count_as_its_own() -> None:
    """After an alias moved (api/following.py), requests still on the old engine finish there: their
    answers count under the old model's sha256, new answers under the new one's, and the old card's
    gauges are gone."""
    from cats_dogs_other.observability.metrics import ModelExpectations, ServiceMetrics

    metrics = ServiceMetrics()
    labels = ["Cat", "Dog", "Other"]
    for sha, accuracy in (("old", 0.9), ("new", 0.95)):
        metrics.serve_model(ModelExpectations(sha, labels, {"Cat": 1.0}, accuracy, unsure_below=0.6))
    metrics.retire_model("old", labels)
    metrics.observe_prediction("Cat", 0.5, "old")  # finishing on the old engine
    metrics.observe_prediction("Dog", 0.9, "new")
    metrics.observe_prediction("Dog", 0.9)  # no model named: the one served now
    found = samples(metrics.render().decode())
    assert value(found, "cdo_predictions_total", model_sha256="old", label="Cat") == 1
    assert value(found, "cdo_predictions_unsure_total", model_sha256="old") == 1
    assert value(found, "cdo_predictions_total", model_sha256="new", label="Dog") == 2
    assert value(found, "cdo_predictions_total", model_sha256="new", label="Cat") == 0
    assert ("cdo_model_validation_accuracy", (("model_sha256", "old"),)) not in found
    assert value(found, "cdo_model_validation_accuracy", model_sha256="new") == 0.95
    assert ("cdo_model_training_label_share", (("label", "Cat"), ("model_sha256", "old"))) not in found
