"""The shipped Prometheus rules: valid (`promtool check rules`), and each alert unit-tested with synthetic
series (`promtool test rules`): made to fire, and to stay quiet where it must; and explained in the README."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.prometheus import PROMETHEUS_DIR, RULES, promtool

PROMTOOL = promtool()
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed: `make test` installs it (Debian prometheus)"
)
TESTS = PROMETHEUS_DIR / "cats-dogs-other.rules.test.yml"


def run_promtool(*arguments: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *arguments], capture_output=True, text=True, cwd=PROMETHEUS_DIR, timeout=120
    )


@needs_promtool
def test_the_rules_are_valid() -> None:
    done = run_promtool("check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_the_rules_unit_tests_pass() -> None:
    done = run_promtool("test", "rules", TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_the_local_configuration_is_valid() -> None:
    done = run_promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_is_unit_tested_and_explained() -> None:
    """An alert without a firing test could never be shown to work; one without a summary, description
    and severity tells the person paged nothing."""
    alerts = [
        rule
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
    fired = {
        case["alertname"]
        for test in yaml.safe_load(TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert {rule["alert"] for rule in alerts} == fired
    readme = (REPO_ROOT / "README.md").read_text()
    for rule in alerts:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
        assert f"| `{rule['alert']}` |" in readme, f"README's alert table does not explain {rule['alert']}"
