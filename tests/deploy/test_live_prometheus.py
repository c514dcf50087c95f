"""The shipped rules on a real Prometheus scraping a real service: what the recording rules compute from
live traffic, read back through Prometheus's HTTP API, equals what the answers themselves say."""

from __future__ import annotations

import math
import time

import httpx
import pytest

from tests.deploy.conftest import MonitoredService


def jensen_shannon_bits(live: dict[str, float], training: dict[str, float]) -> float:
    total = 0.0
    for label in training:
        p, q = live.get(label, 0.0), training[label]
        m = (p + q) / 2
        total += sum(0.5 * x * math.log2(x / m) for x in (p, q) if x > 0)
    return total


def settled(
    service: MonitoredService, expression: str, by: str, expected: dict[str, float]
) -> dict[str, float]:
    """The rule's values once they equal `expected` (scrapes and evaluations run every second), or the
    last values seen after 30 s."""
    deadline = time.monotonic() + 30
    while True:
        found = service.prometheus.values(expression, by)
        if found.keys() == expected.keys() and all(
            math.isclose(found[key], expected[key], abs_tol=1e-9) for key in expected
        ):
            return found
        if time.monotonic() > deadline:
            return found
        time.sleep(0.5)


@pytest.mark.slow
def test_the_live_label_mix_and_its_drift_from_the_training_mix(monitored_service: MonitoredService) -> None:
    service = monitored_service
    answers = service.answers
    live = {
        label: sum(a["prediction"] == label for a in answers) / len(answers) for label in service.training_mix
    }
    assert 0 < live["Cat"] < 1  # a mix, not one label
    sha = service.sha256
    shares = settled(
        service, f'model_sha256_label:cdo_predictions:share1h{{model_sha256="{sha}"}}', "label", live
    )
    assert shares == pytest.approx(live, abs=1e-9)
    training = service.prometheus.values("model_sha256_label:cdo_model_training_label_share:max", "label")
    assert training == pytest.approx(service.training_mix)
    expected = {sha: jensen_shannon_bits(live, service.training_mix)}
    assert expected[sha] > 0.01  # four cats in seven photos is not the training mix
    divergence = settled(service, "model_sha256:cdo_label_mix_divergence:js1h", "model_sha256", expected)
    assert divergence == pytest.approx(expected, abs=1e-6)


@pytest.mark.slow
def test_unsure_answers_and_feedback_accuracy(monitored_service: MonitoredService) -> None:
    service = monitored_service
    answers = service.answers
    unsure = sum(max(a["values"]) < service.unsure_below for a in answers) / len(answers)
    assert 0 < unsure < 1
    sha = service.sha256
    found = settled(
        service, "model_sha256:cdo_predictions_unsure:ratio_rate1h", "model_sha256", {sha: unsure}
    )
    assert found == pytest.approx({sha: unsure}, abs=1e-9)
    accuracy = sum(service.verdicts) / len(service.verdicts)
    found = settled(
        service, "model_sha256:cdo_feedback_accuracy:ratio_rate1d", "model_sha256", {sha: accuracy}
    )
    assert found == pytest.approx({sha: accuracy}, abs=1e-9)


@pytest.mark.slow
def test_request_rules_see_the_routes_and_their_errors(monitored_service: MonitoredService) -> None:
    """Fresh requests (their answers join the traffic's), so that the 5-minute windows hold some."""
    service = monitored_service
    image = service.images[0]
    for _ in range(2):
        answer = httpx.post(
            f"{service.server.base_url}/upload", files={"file": (image.name, image.read_bytes())}
        )
        assert answer.status_code == 200
        service.answers.append(answer.json())
    rates = service.prometheus.wait_for('route:cdo_http_requests:rate5m{route="/upload"} > 0')
    assert rates, service.prometheus.logs()
    errors = service.prometheus.values("route:cdo_http_requests_server_errors:ratio_rate5m", "route")
    assert errors["/upload"] == 0  # a 415 is the client's error, not the server's
    latency = service.prometheus.wait_for('route:cdo_http_request_duration_seconds:p99_5m{route="/upload"}')
    assert 0 < float(latency[0]["value"][1]) <= 10


@pytest.mark.slow
def test_every_rule_evaluates_without_error(monitored_service: MonitoredService) -> None:
    """Prometheus reports each rule's health after evaluating it: a rule that errors on real series
    (a many-to-many match, say) is 'err' with the reason."""
    deadline = time.monotonic() + 30
    while True:
        groups = monitored_service.prometheus.api("rules")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        if all(rule["health"] != "unknown" for rule in rules) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert {group["name"] for group in groups} == {
        "cats-dogs-other.model",
        "cats-dogs-other.service",
        "cats-dogs-other.alerts",
    }
    broken = {rule["name"]: rule.get("lastError") for rule in rules if rule["health"] != "ok"}
    assert not broken
    firing = [rule["name"] for rule in rules if rule.get("state") == "firing"]
    assert not firing  # seconds of healthy traffic page nobody
