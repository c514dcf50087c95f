"""The Grafana dashboard: the committed JSON is what its code builds, and every panel's query reads
metrics a live service really exports (or series the shipped rules record from them) and returns data
from a real Prometheus scraping that service."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO_ROOT
from tests.deploy.conftest import MonitoredService
from tests.prometheus import metric_names, recorded_rules

GRAFANA = REPO_ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "cats-dogs-other.json"
# Grafana's own variables, as Grafana would fill them in for a query.
GRAFANA_VARIABLES = {"$__rate_interval": "1m"}


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grafana_dashboard", GRAFANA / "dashboard.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in board["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # a collapsed row holds its panels
    return found


def expressions() -> dict[str, str]:
    """`panel title / refId` -> the query's PromQL."""
    board = json.loads(DASHBOARD.read_text())
    return {
        f"{panel['title']} / {target['refId']}": target["expr"]
        for panel in panels(board)
        for target in panel.get("targets", [])
    }


def exported_names(metrics_text: str) -> set[str]:
    """Every sample name a /metrics page has (a histogram's _bucket, _sum and _count, a counter's _total)."""
    return {
        sample.name for family in text_string_to_metric_families(metrics_text) for sample in family.samples
    }


def test_the_committed_dashboard_is_what_its_code_builds() -> None:
    assert DASHBOARD.read_text() == generator().dashboard_json(), "run `make dashboard` and commit the JSON"


def test_the_dashboard_covers_what_operators_watch() -> None:
    titles = {panel["title"] for panel in panels(json.loads(DASHBOARD.read_text()))}
    for needed in (
        "Requests by route and status",
        "Errors",
        "Latency of answered predictions",
        "Refusals by reason",
        "Batch size",
        "Queue",
        "Label mix: live (1 h) and training",
        "Drift from the training mix",
        "Unsure answers",
        "Feedback accuracy",
        "Feedback store",
        "Feedback refused and deleted",
    ):
        assert needed in titles
    ids = [panel["id"] for panel in panels(json.loads(DASHBOARD.read_text()))]
    assert len(ids) == len(set(ids))


@pytest.mark.slow
def test_every_query_reads_metrics_the_live_service_exports(monitored_service: MonitoredService) -> None:
    exported = exported_names(httpx.get(f"{monitored_service.server.base_url}/metrics").text)
    recorded = recorded_rules()
    # The rules themselves read only exported metrics or series recorded before them.
    for name, expression in recorded.items():
        unknown = metric_names(expression) - exported - recorded.keys()
        assert not unknown, f"rule {name} reads {unknown}"
    queries = expressions()
    assert len(queries) >= 15
    for panel, expression in queries.items():
        names = metric_names(expression)
        assert names, f"{panel}: no metric found in {expression}"
        unknown = names - exported - recorded.keys()
        assert not unknown, f"{panel} reads {unknown}, which neither /metrics nor the rules have"


@pytest.mark.slow
def test_every_query_returns_data_from_prometheus(monitored_service: MonitoredService) -> None:
    prometheus = monitored_service.prometheus
    for panel, expression in expressions().items():
        for variable, value in GRAFANA_VARIABLES.items():
            expression = expression.replace(variable, value)
        assert "$" not in expression.replace('"$1"', ""), f"{panel}: a variable Grafana would not fill in"
        result = prometheus.wait_for(expression, timeout=30)
        assert result, f"{panel}: no data for {expression}"


def test_the_metric_name_reader() -> None:
    """The reader the checks above rely on, on the shapes the dashboard and the rules use."""
    assert metric_names(
        'label_replace(sum by (model_sha256, label) (rate(cdo_predictions_total{x="a(b)"}[5m])), '
        '"model", "$1", "model_sha256", "(.{12}).*")'
    ) == {"cdo_predictions_total"}
    assert metric_names(
        "a:b:c / ignoring (label) group_left () d > 1e-9 and on (m) e * 3600 >= 200 or vector(0)"
    ) == {"a:b:c", "d", "e"}


def test_the_dashboard_file_is_valid_grafana_json(tmp_path: Path) -> None:
    """The SDK reads its own output back (its models validate the structure)."""
    from grafana_foundation_sdk.models.dashboard import Dashboard

    board = Dashboard.from_json(json.loads(DASHBOARD.read_text()))
    assert board.title == "cats-dogs-other"
    assert board.uid == "cats-dogs-other"
