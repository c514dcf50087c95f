"""The Dockerfile and its lock, read: hadolint, what the Dockerfile promises, every runtime dependency
pinned with hashes. tests/deploy/test_image.py builds and runs it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.conftest import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    done = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_keeps_its_promises() -> None:
    text = DOCKERFILE.read_text()
    defaults = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, flags=re.MULTILINE))
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, flags=re.MULTILINE)
    named: list[str] = []
    for image, name in stages:  # every stage starts from the pinned slim base or an earlier stage
        if image not in named:
            assert "-slim@sha256:" in re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], image)
        named.append(name)
    assert stages[-1][0] == "${PYTHON_IMAGE}"  # the image itself: the bare base and what is copied in
    runtime = text.rsplit("\nFROM ", 1)[1]
    assert re.search(r"^USER 10001$", runtime, flags=re.MULTILINE)  # non-root
    assert "EXPOSE 8080" in runtime
    for absent in ("torch", "gcc", "build-essential", "apt-get", "RUN install-service"):
        assert absent not in runtime
    # The dependencies are installed before any source is copied: a change under src/ reuses them.
    dependencies = text.index("RUN install-service dependencies")
    assert dependencies < text.index("COPY src")
    assert "COPY src" not in text[: text.index("AS package")]
    assert "ARG MODEL_URI" in text  # a model from MLflow at build time...
    assert "cats-dogs-other fetch" in text
    ignored = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignored  # the build context is only what the image needs
    assert "!src/" in ignored


def test_the_lock_pins_every_runtime_dependency_with_hashes() -> None:
    """requirements.lock is what the image installs: it must satisfy pyproject.toml (run `make lock`)."""
    from packaging.requirements import Requirement

    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    lock = (REPO_ROOT / "deploy" / "docker" / "requirements.lock").read_text()
    pinned = {
        name.lower().replace("_", "-"): version
        for name, version in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\$", lock, flags=re.MULTILINE)
    }
    blocks = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", lock.split("\n", 2)[2])
    assert all("--hash=sha256:" in block for block in blocks if "==" in block)
    for text in pyproject["project"]["dependencies"]:
        requirement = Requirement(text)
        name = requirement.name.lower().replace("_", "-")
        assert name in pinned, f"{name} is not in the lock: run make lock"
        assert requirement.specifier.contains(pinned[name]), f"{name}=={pinned[name]} violates {text}"
