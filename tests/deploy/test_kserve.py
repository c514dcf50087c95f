"""KServe manifests: valid against KServe's own schema (the kserve SDK's generated models, pinned, down to
the Kubernetes models of the pod), and serving what the plain Deployment serves."""

from __future__ import annotations

import functools
import re
import sys
from types import ModuleType
from typing import Any
from unittest import mock

import kubernetes.client.models as kubernetes_models
import kubernetes_validate
import pytest
import yaml

from cats_dogs_other.api import create_app
from cats_dogs_other.settings import Settings
from tests.conftest import REPO_ROOT

KSERVE = REPO_ROOT / "deploy" / "kserve"
K8S = REPO_ROOT / "deploy" / "k8s"
INFERENCE_SERVICES = ("inferenceservice.yaml", "inferenceservice-knative.yaml")
KUBERNETES_VERSION = "1.30.0"
PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "object": (object,),
}


# The generated models spell containers two ways: kserve's `list[X]`, `dict(str, X)`; kubernetes's
# `List[X]`, `Dict[str, X]`.
LIST = re.compile(r"[Ll]ist\[(.+)\]")
MAPPING = re.compile(r"dict\(str, (.+)\)|Dict\[str, (.+)\]")


class SchemaError(AssertionError):
    pass


@functools.cache
def kserve_models() -> ModuleType:
    """The SDK's models. Importing `kserve` parses sys.argv as its model server's command line (at import
    time, `parse_known_args`): it is given an empty one, not pytest's."""
    with mock.patch.object(sys, "argv", ["kserve-schema-check"]):
        import kserve.models

    return kserve.models


def model_class(name: str) -> type:
    for module in (kserve_models(), kubernetes_models):
        found = getattr(module, name, None)
        if isinstance(found, type):
            return found
    raise SchemaError(f"no model named {name} in kserve or kubernetes")


def build(value: Any, type_name: str, path: str) -> Any:
    """`value` as an instance of the generated model `type_name`, key by key: an unknown key, a value of
    the wrong type, or (through the models' own setters) a missing required field is a SchemaError."""
    listed = LIST.fullmatch(type_name)
    if listed:
        if not isinstance(value, list):
            raise SchemaError(f"{path}: a list is expected")
        return [build(item, listed.group(1), f"{path}[{i}]") for i, item in enumerate(value)]
    mapped = MAPPING.fullmatch(type_name)
    if mapped:
        if not isinstance(value, dict):
            raise SchemaError(f"{path}: a mapping is expected")
        inner = mapped.group(1) or mapped.group(2)
        return {key: build(item, inner, f"{path}.{key}") for key, item in value.items()}
    if type_name in PRIMITIVES:
        if not isinstance(value, PRIMITIVES[type_name]) or (type_name == "int" and isinstance(value, bool)):
            raise SchemaError(f"{path}: {type_name} expected, got {value!r}")
        return value
    if type_name == "ResourceQuantity":  # Kubernetes quantities: "500m", "768Mi", 2
        if not isinstance(value, str | int | float):
            raise SchemaError(f"{path}: a quantity expected, got {value!r}")
        return value
    cls = model_class(type_name)
    if not isinstance(value, dict):
        raise SchemaError(f"{path}: an object ({type_name}) is expected")
    fields = {json_key: attribute for attribute, json_key in cls.attribute_map.items()}
    unknown = set(value) - set(fields)
    if unknown:
        raise SchemaError(f"{path}: {sorted(unknown)} not in {type_name}")
    arguments = {
        fields[key]: build(item, cls.openapi_types[fields[key]], f"{path}.{key}")
        for key, item in value.items()
    }
    try:
        return cls(**arguments)
    except ValueError as exc:
        raise SchemaError(f"{path}: {exc}") from None


def load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((KSERVE / name).read_text())
    return document


def predictor_container(name: str) -> dict[str, Any]:
    (container,) = load(name)["spec"]["predictor"]["containers"]
    return container


@pytest.mark.parametrize("name", INFERENCE_SERVICES)
def test_the_inference_service_is_valid_against_kserves_schema(name: str) -> None:
    manifest = load(name)
    assert manifest["apiVersion"] == "serving.kserve.io/v1beta1"
    service = build(manifest, "V1beta1InferenceService", name)
    assert service.spec.predictor.containers[0].ports[0].container_port == 8080


def test_the_schema_check_catches_mistakes() -> None:
    """The check above is only as good as its failures: a misspelt field, a wrong type and a container
    without a name are each refused."""
    manifest = load("inferenceservice.yaml")
    misspelt = {**manifest, "spec": {"predictor": {**manifest["spec"]["predictor"], "minReplica": 2}}}
    with pytest.raises(SchemaError, match="minReplica"):
        build(misspelt, "V1beta1InferenceService", "misspelt")
    wrong_type = {**manifest, "spec": {"predictor": {**manifest["spec"]["predictor"], "maxReplicas": "ten"}}}
    with pytest.raises(SchemaError, match="maxReplicas"):
        build(wrong_type, "V1beta1InferenceService", "wrong type")
    container = {
        key: value for key, value in predictor_container("inferenceservice.yaml").items() if key != "name"
    }
    nameless = {**manifest, "spec": {"predictor": {"containers": [container]}}}
    with pytest.raises(SchemaError, match="name"):
        build(nameless, "V1beta1InferenceService", "nameless")


def test_the_kustomization_lists_the_standard_mode_manifests() -> None:
    listed = set(load("kustomization.yaml")["resources"])
    assert listed == {p.name for p in KSERVE.glob("*.yaml")} - {
        "kustomization.yaml",
        "inferenceservice-knative.yaml",
    }
    for name in ("configmap.yaml", "pdb.yaml"):
        kubernetes_validate.validate(load(name), KUBERNETES_VERSION, strict=True)


def test_standard_mode_scales_with_an_hpa_like_the_plain_deployment() -> None:
    manifest = load("inferenceservice.yaml")
    annotations = manifest["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] == "Standard"
    assert annotations["serving.kserve.io/autoscalerClass"] == "hpa"
    predictor = manifest["spec"]["predictor"]
    hpa = yaml.safe_load((K8S / "hpa.yaml").read_text())["spec"]
    assert predictor["minReplicas"] == hpa["minReplicas"]
    assert predictor["maxReplicas"] == hpa["maxReplicas"]
    assert predictor["scaleMetric"] == "cpu"
    assert predictor["scaleTarget"] == hpa["metrics"][0]["resource"]["target"]["averageUtilization"]
    deployment = yaml.safe_load((K8S / "deployment.yaml").read_text())["spec"]["template"]["spec"]
    assert predictor["terminationGracePeriodSeconds"] == deployment["terminationGracePeriodSeconds"]
    pdb = load("pdb.yaml")["spec"]["selector"]["matchLabels"]
    assert pdb["serving.kserve.io/inferenceservice"] == manifest["metadata"]["name"]


def test_the_knative_variant_scales_on_requests_in_flight() -> None:
    manifest = load("inferenceservice-knative.yaml")
    assert manifest["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
    predictor = manifest["spec"]["predictor"]
    assert predictor["scaleMetric"] == "concurrency"
    assert predictor["timeout"] > Settings().body_deadline_seconds
    assert "terminationGracePeriodSeconds" not in predictor  # Knative refuses it


@pytest.mark.parametrize("name", INFERENCE_SERVICES)
def test_the_predictor_serves_like_the_plain_deployment(name: str) -> None:
    """Same image contract as deploy/k8s: the port, probes on real routes, and the annotations Prometheus
    scrapes by (the container's fields one by one: the next test)."""
    manifest = load(name)
    container = predictor_container(name)
    (plain,) = yaml.safe_load((K8S / "deployment.yaml").read_text())["spec"]["template"]["spec"]["containers"]
    routes = set(create_app(Settings(auth_disabled=True)).openapi()["paths"])
    assert container["ports"][0]["containerPort"] == plain["ports"][0]["containerPort"] == 8080
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["path"] == plain[probe]["httpGet"]["path"]
        assert container[probe]["httpGet"]["path"] in routes
        assert container[probe]["httpGet"].get("port", 8080) == 8080
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert manifest["spec"]["predictor"]["securityContext"]["runAsNonRoot"] is True
    annotations = manifest["metadata"]["annotations"]
    assert annotations["serving.kserve.io/enable-prometheus-scraping"] == "true"
    assert annotations["prometheus.kserve.io/port"] == "8080"
    assert annotations["prometheus.kserve.io/path"] == "/metrics"
    assert manifest["spec"]["predictor"]["labels"]["app.kubernetes.io/name"] == "cats-dogs-other"


def named_ports_resolved(container: dict[str, Any]) -> dict[str, Any]:
    """The container with each probe's named port replaced by its number (KServe probes by number)."""
    numbers = {port["name"]: port["containerPort"] for port in container["ports"]}
    resolved = yaml.safe_load(yaml.safe_dump(container))
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        port = resolved[probe]["httpGet"]["port"]
        resolved[probe]["httpGet"]["port"] = numbers.get(port, port)
    return resolved


@pytest.mark.parametrize("name", INFERENCE_SERVICES)
def test_the_predictor_container_is_the_deployments_where_they_must_agree(name: str) -> None:
    """Field by field, so that a change to one manifest that the other misses fails here: how the
    image is started (command, args), its settings, probes, resources, hardening, what is mounted."""
    container = named_ports_resolved(predictor_container(name))
    template = yaml.safe_load((K8S / "deployment.yaml").read_text())["spec"]["template"]["spec"]
    (plain,) = template["containers"]
    plain = named_ports_resolved(plain)
    must_agree = (
        "command",
        "args",
        "workingDir",
        "env",
        "envFrom",
        "startupProbe",
        "livenessProbe",
        "readinessProbe",
        "resources",
        "securityContext",
        "volumeMounts",
        "imagePullPolicy",
    )
    for field in must_agree:
        assert container.get(field) == plain.get(field), field
    assert [p["containerPort"] for p in container["ports"]] == [p["containerPort"] for p in plain["ports"]]
    predictor = load(name)["spec"]["predictor"]
    for field in ("securityContext", "volumes", "automountServiceAccountToken"):
        assert predictor.get(field) == template.get(field), field
    if "knative" not in name:  # Knative sets the grace period itself (and refuses the field)
        assert predictor["terminationGracePeriodSeconds"] == template["terminationGracePeriodSeconds"]


def test_the_settings_are_the_plain_deployments() -> None:
    kserve = load("configmap.yaml")
    plain = yaml.safe_load((K8S / "configmap.yaml").read_text())
    assert kserve["metadata"]["name"] == plain["metadata"]["name"]
    assert kserve["data"] == plain["data"]
    assert {"OAUTH2_ISSUER", "OAUTH2_AUDIENCE"} <= set(kserve["data"])
