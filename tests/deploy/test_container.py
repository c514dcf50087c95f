"""The container image, without a Docker engine: lint the Dockerfile, run its install steps for real."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"
INSTALL = REPO_ROOT / "deploy" / "docker" / "install.sh"


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


@pytest.mark.slow
def test_install_steps_give_a_working_runtime_without_torch(
    tmp_path: Path, sample_files: dict[str, Path]
) -> None:
    # The Dockerfile's own steps, into a fresh venv, from a copy of what .dockerignore lets in.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "deploy/docker/requirements.lock"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / name, source / name)
    shutil.copytree(
        REPO_ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    venv = tmp_path / "venv"
    env = {**os.environ, "PYTHON": sys.executable}
    for step in (
        ["dependencies", str(venv), str(source)],
        ["package", str(venv), str(source)],
        ["slim", str(venv)],
    ):
        done = subprocess.run(
            ["sh", str(INSTALL), *step], capture_output=True, text=True, env=env, timeout=900
        )
        assert done.returncode == 0, done.stderr[-3000:]
    listed = "import importlib.metadata as m\nfor d in m.distributions(): print(d.metadata['Name'])"
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-c", listed], capture_output=True, text=True, check=True
    ).stdout
    names = {name.lower() for name in installed.splitlines()}
    assert {"onnxruntime", "fastapi", "uvicorn", "pillow", "cats-dogs-other"} <= names
    assert not names & {"torch", "keras", "mlflow", "tensorflow"}  # the runtime stays light
    assert not names & {"pip", "setuptools"}  # installing tools left out by the `slim` step
    predicted = subprocess.run(
        [str(venv / "bin" / "cats-dogs-other"), "predict", "--json", str(sample_files["Dog"])],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout)["prediction"] == "Dog"  # the default model is in the package


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
