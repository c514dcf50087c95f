"""deploy/k8s played for real with `podman kube play`: the Deployment and its ConfigMap, the feedback
Secret holding the URL of a real PostgreSQL (a password login from the pod's network), the image built
from the Dockerfile. It becomes ready, stores a correction in PostgreSQL, and `kube down` removes it."""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml

from tests.containers import REPO_ROOT, Podman
from tests.deploy.conftest import BuiltImage
from tests.postgres import PostgresServer, postgres_bin_dir
from tests.servers import free_port, wait_until_ok

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

K8S = REPO_ROOT / "deploy" / "k8s"
FEEDBACK_SECRET = "cats-dogs-other-feedback"


@dataclass
class PodNetwork:
    """A podman network of the test's own, and its gateway: the host as the pod sees it."""

    name: str
    subnet: str
    gateway: str


@pytest.fixture(scope="module")
def pod_network(service_image: BuiltImage) -> Iterator[PodNetwork]:
    podman = service_image.podman
    name = f"cdo-kube-{uuid.uuid4().hex[:8]}"
    podman("network", "create", name)
    try:
        (subnet,) = json.loads(podman("network", "inspect", name))[0]["subnets"]
        # The bridge (and its gateway address, which PostgreSQL listens on) exists once a container
        # has joined the network; it stays until the network is removed.
        podman("run", "--rm", f"--network={name}", "--entrypoint=true", service_image.name)
        yield PodNetwork(name, subnet["subnet"], subnet["gateway"])
    finally:
        podman("network", "rm", "--force", name, check=False)


@dataclass
class FeedbackDatabase:
    server: PostgresServer
    admin_url: str  # for the test, from the host
    pod_url: str  # for the pod: a role with a password, through the network's gateway


@pytest.fixture(scope="module")
def feedback_database(pod_network: PodNetwork) -> Iterator[FeedbackDatabase]:
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip(reason="PostgreSQL is not installed: `make test` installs it (Debian postgresql)")
    server = PostgresServer(bin_dir, listen=("127.0.0.1", pod_network.gateway))
    try:
        server.allow_password_logins(pod_network.subnet)
        server.start()
        password = secrets.token_urlsafe(16)
        server.create_role("feedback", password)
        admin_url = server.create_database(owner="feedback")
        database = admin_url.rsplit("/", 1)[1]
        pod_url = f"postgresql://feedback:{password}@{pod_network.gateway}:{server.port}/{database}"
        yield FeedbackDatabase(server, admin_url, pod_url)
    finally:
        server.remove()


def deployment_for_one_host(port: int) -> dict[str, Any]:
    """deploy/k8s/deployment.yaml with the two things a single podman host needs: one replica (every
    replica would bind the same host port) and that port published on loopback (no Service here)."""
    deployment: dict[str, Any] = yaml.safe_load((K8S / "deployment.yaml").read_text())
    deployment["spec"]["replicas"] = 1
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (http,) = container["ports"]
    http.update(hostPort=port, hostIP="127.0.0.1")
    return deployment


def configmap_without_tokens() -> dict[str, Any]:
    """The shipped ConfigMap, with tokens off and anonymous feedback on: the pod cannot reach an HTTPS
    issuer here, and tokens are tested end to end elsewhere (tests/auth, tests/web)."""
    configmap: dict[str, Any] = yaml.safe_load((K8S / "configmap.yaml").read_text())
    configmap["data"].update(AUTH_DISABLED="true", FEEDBACK_ALLOW_ANONYMOUS="true")
    return configmap


def create_secret(podman: Podman, name: str, data: dict[str, str], folder: Path) -> None:
    """A Kubernetes Secret as podman 4.3 reads it back for `secretKeyRef`: a JSON object of base64
    values (4.3 stores a kube-played Secret's YAML, which its own `secretKeyRef` cannot parse:
    containers/podman#16269)."""
    path = folder / f"{name}.json"
    path.write_text(
        json.dumps({key: base64.b64encode(value.encode()).decode() for key, value in data.items()})
    )
    path.chmod(0o600)
    podman("secret", "create", name, str(path))
    path.unlink()


@dataclass
class PlayedDeployment:
    podman: Podman
    base_url: str
    container: str
    manifest: Path


@pytest.fixture(scope="module")
def played(
    service_image: BuiltImage,
    pod_network: PodNetwork,
    feedback_database: FeedbackDatabase,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PlayedDeployment]:
    podman = service_image.podman
    folder = tmp_path_factory.mktemp("kube")
    port = free_port()
    deployment = deployment_for_one_host(port)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    container["image"] = service_image.name  # what the kustomization's `images:` does in a cluster
    manifest = folder / "deployment.yaml"
    manifest.write_text(yaml.safe_dump(deployment))
    configmap = folder / "configmap.yaml"
    configmap.write_text(yaml.safe_dump(configmap_without_tokens()))
    podman("secret", "rm", FEEDBACK_SECRET, check=False)
    create_secret(podman, FEEDBACK_SECRET, {"database-url": feedback_database.pod_url}, folder)
    name = deployment["metadata"]["name"]
    try:
        podman("kube", "play", f"--network={pod_network.name}", f"--configmap={configmap}", str(manifest))
        played = PlayedDeployment(
            podman, f"http://127.0.0.1:{port}", f"{name}-pod-0-{container['name']}", manifest
        )
        wait_until_ok(f"{played.base_url}/ready", 90, diagnostics=lambda: podman.logs(played.container))
        yield played
    finally:
        podman("kube", "down", str(manifest), check=False)
        podman("secret", "rm", FEEDBACK_SECRET, check=False)


def test_the_pod_runs_as_the_deployment_says(played: PlayedDeployment) -> None:
    (inspected,) = json.loads(played.podman("container", "inspect", played.container))
    host = inspected["HostConfig"]
    assert inspected["Config"]["User"].split(":")[0] == "10001"
    assert host["ReadonlyRootfs"] is True
    assert host["Memory"] == 768 * 1024 * 1024
    assert {cap.upper().removeprefix("CAP_") for cap in host["CapDrop"]} >= {"NET_RAW", "SETUID", "CHOWN"}
    assert not host["CapAdd"]
    assert "no-new-privileges" in " ".join(host["SecurityOpt"])
    assert any(mount["Destination"] == "/tmp" for mount in inspected["Mounts"])


def test_the_played_deployment_stores_a_correction_in_postgresql(
    played: PlayedDeployment, feedback_database: FeedbackDatabase, sample_files: dict[str, Path]
) -> None:
    with httpx.Client(base_url=played.base_url, timeout=60) as client:
        version = client.get("/version").json()
        assert version["feedback"]["enabled"] is True
        photo = sample_files["Dog"]
        answer = client.post("/upload", files={"file": (photo.name, photo.read_bytes())})
        assert answer.status_code == 200, answer.text
        assert answer.json()["prediction"] == "Dog"
        stored = client.post(
            "/feedback",
            files={"file": (photo.name, photo.read_bytes())},
            data={"label": "Other", "predicted": "Dog", "model_sha256": version["model"]["sha256"]},
        )
        assert stored.status_code == 201, stored.text
    with psycopg.connect(feedback_database.admin_url) as connection:
        rows = connection.execute("SELECT label, predicted, model_sha256 FROM feedback_labels").fetchall()
    assert rows == [("Other", "Dog", version["model"]["sha256"])]


def test_kube_down_removes_the_pod(played: PlayedDeployment) -> None:
    played.podman("kube", "down", str(played.manifest))
    assert not played.podman.ok("container", "exists", played.container)
    assert not played.podman.ok("pod", "exists", f"{played.container.rsplit('-', 1)[0]}")
