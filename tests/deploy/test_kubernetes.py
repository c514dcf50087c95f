"""Kubernetes manifests: valid against the API schemas (offline), and consistent with the service."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from cats_dogs_other.api import create_app
from cats_dogs_other.settings import Settings
from tests.conftest import REPO_ROOT

K8S = REPO_ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"


def manifests() -> dict[str, dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return {name: yaml.safe_load((K8S / name).read_text()) for name in kustomization["resources"]}


def test_kustomization_lists_every_manifest() -> None:
    listed = set(manifests())
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


@pytest.mark.parametrize("name", sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"))
def test_manifest_is_valid_against_the_api_schema(name: str) -> None:
    resource = yaml.safe_load((K8S / name).read_text())
    kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_deployment_probes_and_hardening() -> None:
    deployment = manifests()["deployment.yaml"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    routes = set(create_app(Settings(auth_disabled=True)).openapi()["paths"])
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["startupProbe"]["httpGet"]["path"] in routes
    assert {"/ready", "/health", "/metrics"} <= routes
    assert container["ports"][0]["containerPort"] == 8080
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {"requests", "limits"} <= set(container["resources"])
    assert {"configMapRef": {"name": "cats-dogs-other"}} in container["envFrom"]
    config = manifests()["configmap.yaml"]["data"]
    assert {"OAUTH2_ISSUER", "OAUTH2_AUDIENCE"} <= set(config)
    Settings(**{k.lower(): v for k, v in config.items()})  # every key is a real setting with a valid value
    drain = float(config["SHUTDOWN_DRAIN_SECONDS"]) + float(config["SHUTDOWN_GRACE_SECONDS"])
    assert pod["terminationGracePeriodSeconds"] > drain


def test_feedback_database_comes_from_an_optional_secret() -> None:
    """Replicas share one PostgreSQL database for feedback; its URL (with a password) is never in the
    ConfigMap, and a cluster without the Secret still starts (feedback off)."""
    (container,) = manifests()["deployment.yaml"]["spec"]["template"]["spec"]["containers"]
    (variable,) = [v for v in container["env"] if v["name"] == "FEEDBACK_DATABASE_URL"]
    reference = variable["valueFrom"]["secretKeyRef"]
    assert reference["optional"] is True
    assert reference["name"] != "cats-dogs-other"  # its own Secret, not mixed with other settings
    assert "feedback_database_url" in Settings.model_fields
    assert "FEEDBACK_DATABASE_URL" not in manifests()["configmap.yaml"]["data"]


def test_hpa_and_pdb_target_the_deployment() -> None:
    found = manifests()
    assert found["hpa.yaml"]["spec"]["scaleTargetRef"]["name"] == found["deployment.yaml"]["metadata"]["name"]
    labels = found["deployment.yaml"]["spec"]["template"]["metadata"]["labels"]
    for selector in (
        found["pdb.yaml"]["spec"]["selector"]["matchLabels"],
        found["service.yaml"]["spec"]["selector"],
    ):
        assert selector.items() <= labels.items()
