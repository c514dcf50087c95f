"""Podman for the image tests: the service's image built from the project's Dockerfile and run as the
Deployment runs it. Debian's podman, runc and mmdebstrap (`make test` installs them when missing) with
tests/deploy/containers.conf, the settings this sandbox needs (crun cannot set rlimits here)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.servers import free_port, wait_until_ok

REPO_ROOT = Path(__file__).resolve().parent.parent
CONTAINERS_CONF = REPO_ROOT / "tests" / "deploy" / "containers.conf"
# Between runs, the stand-in base's root filesystem (git-ignored): `make test` builds it once.
CACHE = REPO_ROOT / ".cache" / "containers"
STAND_IN_BASE = "localhost/python:3.11-slim-local"
SERVICE_IMAGE = "localhost/cats-dogs-other:test"
# Outbound HTTPS may go through a proxy whose CA only the host trusts: pip in the build's RUN steps sees
# the host's bundle (a build-time mount, not part of the image).
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# What the Deployment's container gets (deploy/k8s/deployment.yaml): read-only root, /tmp writable,
# no capabilities, no privilege escalation, 768 MiB with no swap beyond it.
HARDENED = (
    "--read-only",
    "--tmpfs=/tmp:rw,size=1g,mode=1777",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges",
    "--memory=768m",
    "--memory-swap=768m",
)


class ContainerToolMissingError(RuntimeError):
    """A tool the image tests need is not installed (`make test` installs them)."""


class Podman:
    """`podman` with the project's containers.conf; each call's output captured and checked."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        done = subprocess.run(
            [self.binary, *args], capture_output=True, text=True, env=self.env, timeout=timeout
        )
        if check and done.returncode != 0:
            command = " ".join(args[:2])
            raise RuntimeError(f"podman {command} failed ({done.returncode}):\n{done.stderr[-4000:]}")
        return done.stdout

    def logs(self, container: str) -> str:
        """What a container printed, both streams (the service's JSON log lines go to stderr)."""
        done = subprocess.run(
            [self.binary, "logs", container],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
            timeout=60,
        )
        return done.stdout

    def ok(self, *args: str, timeout: float = 120) -> bool:
        return (
            subprocess.run(
                [self.binary, *args], capture_output=True, env=self.env, timeout=timeout
            ).returncode
            == 0
        )


def podman_or_skip() -> Podman:
    missing = [name for name in ("podman", "runc") if shutil.which(name) is None]
    if missing:
        names = ", ".join(missing)
        pytest.skip(reason=f"{names} not installed: `make test` installs them (Debian's podman and runc)")
    podman = Podman(shutil.which("podman") or "podman")
    if not podman.ok("info"):
        pytest.skip(reason=f"podman cannot run here: {podman('info', check=False)[-500:]}")
    return podman


def dockerfile_base() -> str:
    """The Dockerfile's pinned base image (its PYTHON_IMAGE default)."""
    text = (REPO_ROOT / "Dockerfile").read_text()
    found = re.search(r"^ARG PYTHON_IMAGE=(\S+)", text, flags=re.MULTILINE)
    assert found, "the Dockerfile names its base in ARG PYTHON_IMAGE"
    return found.group(1)


def base_image(podman: Podman) -> str:
    """The official base if it can be pulled; where Docker Hub is unreachable, a stand-in with the same
    Python minor version from Debian's packages (python3, venv, CA certificates), built once and kept."""
    official = dockerfile_base()
    if podman.ok("image", "exists", official) or podman.ok("pull", "--quiet", official, timeout=300):
        return official
    if podman.ok("image", "exists", STAND_IN_BASE):
        return STAND_IN_BASE
    tarball = CACHE / "python-3.11-slim-local.tar"
    if not tarball.exists():
        if shutil.which("mmdebstrap") is None:
            raise ContainerToolMissingError(f"{official} cannot be pulled and mmdebstrap is not installed")
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = tarball.with_suffix(".partial.tar")
        excluded = ("doc", "man", "locale", "info")
        subprocess.run(
            [
                "mmdebstrap",
                "--quiet",
                "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates",
                *(f"--dpkgopt=path-exclude=/usr/share/{name}/*" for name in excluded),
                "bookworm",  # Python 3.11, as python:3.11-slim
                str(partial),
            ],
            check=True,
            capture_output=True,
            timeout=600,
        )
        partial.rename(tarball)
    podman("import", "--quiet", "--change", "ENV LANG=C.UTF-8", str(tarball), STAND_IN_BASE, timeout=300)
    return STAND_IN_BASE


def build_image(
    podman: Podman, base: str, tag: str = SERVICE_IMAGE, context: Path = REPO_ROOT, no_cache: bool = False
) -> float:
    """`podman build` of the project's Dockerfile (in `context`, by default the repository); the seconds
    it took."""
    mounts = [f"--volume={HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"] if HOST_CA_BUNDLE.exists() else []
    started = time.monotonic()
    podman(
        "build",
        "--quiet",
        f"--build-arg=PYTHON_IMAGE={base}",
        *mounts,
        *(["--no-cache"] if no_cache else []),
        "--tag",
        tag,
        str(context),
        timeout=900,
    )
    return time.monotonic() - started


@dataclass
class Container:
    """One container of the service, published on a free loopback port."""

    podman: Podman
    image: str
    options: tuple[str, ...] = HARDENED
    env: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    name: str = field(default_factory=lambda: f"cdo-test-{uuid.uuid4().hex[:10]}")
    port: int = field(default_factory=free_port)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90) -> Container:
        environment = [f"--env={key}={value}" for key, value in self.env.items()]
        self.podman(
            "run",
            "--detach",
            f"--name={self.name}",
            f"--publish=127.0.0.1:{self.port}:8080",
            *self.options,
            *environment,
            self.image,
            *self.args,
        )
        wait_until_ok(f"{self.base_url}/ready", timeout, self.running, self.logs)
        return self

    def inspect(self) -> dict[str, object]:
        found: list[dict[str, object]] = json.loads(self.podman("container", "inspect", self.name))
        return found[0]

    def state(self) -> dict[str, object]:
        state = self.inspect()["State"]
        assert isinstance(state, dict)
        return state

    def running(self) -> bool:
        return bool(self.state().get("Running"))

    def host_pid(self) -> int:
        """The service's process as the host sees it (rootful podman), for /proc readings."""
        return int(str(self.state()["Pid"]))

    def exec(self, *command: str) -> str:
        return self.podman("exec", self.name, *command)

    def logs(self) -> str:
        return self.podman.logs(self.name)

    def signal(self, name: str) -> None:
        self.podman("kill", f"--signal={name}", self.name)

    def wait(self, timeout: float) -> int:
        """Until the container has stopped; its exit code."""
        return int(self.podman("wait", self.name, timeout=timeout).strip())

    def stop(self, grace_seconds: int = 45) -> int:
        """SIGTERM (then SIGKILL after the grace period, as the kubelet does); the exit code."""
        self.podman("stop", f"--time={grace_seconds}", self.name, timeout=grace_seconds + 30)
        return int(str(self.state()["ExitCode"]))

    def remove(self) -> None:
        self.podman("rm", "--force", "--time=0", "--volumes", self.name, check=False)
