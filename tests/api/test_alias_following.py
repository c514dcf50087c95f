"""`serve` following `models:/NAME@ALIAS` (MODEL_REFRESH_SECONDS) against a real MLflow server: a
promoted version is served without a restart and without a failed request; a refused one never moves
the alias; a version that cannot be loaded leaves the old one serving."""

from __future__ import annotations

import base64
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cats_dogs_other.inference.classifier import file_sha256
from cats_dogs_other.models.card import default_model_path
from tests.api.conftest import ServeProcess, serve_command
from tests.registry import cli, register

REFRESH_SECONDS = "0.5"
# Between a client's requests: requests all the time, and cores left for the trainings meanwhile.
PAUSE_SECONDS = 0.02


class SteadyClient:
    """Sends v2 infer and /upload requests one after another until stopped, noting every status and
    the model version each v2 answer names."""

    def __init__(self, base_url: str, image: bytes) -> None:
        self.base_url = base_url
        self.image = image
        self.statuses: Counter[int] = Counter()
        self.versions: list[str] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SteadyClient:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        data = base64.b64encode(self.image).decode()
        body = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [data]}]}
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            while not self._stop.is_set():
                try:
                    answer = client.post("/v2/models/cats-dogs-other/infer", json=body)
                    self.statuses[answer.status_code] += 1
                    if answer.status_code == 200:
                        self.versions.append(answer.json()["model_version"])
                    upload = client.post("/upload", files={"file": ("x.png", self.image)})
                    self.statuses[upload.status_code] += 1
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                self._stop.wait(PAUSE_SECONDS)


def samples(base_url: str, name: str) -> list[tuple[dict[str, str], float]]:
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def wait_for(condition: Callable[[], bool], timeout: float, what: str, logs: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen in {timeout} s:\n{logs()[-4000:]}")
        time.sleep(0.1)


def refreshes(base_url: str, outcome: str) -> float:
    return sum(
        v for labels, v in samples(base_url, "cdo_model_refreshes_total") if labels["outcome"] == outcome
    )


def served(base_url: str) -> dict[str, str]:
    return httpx.get(f"{base_url}/version", timeout=10).json()["model"]


def following(mlflow_server: str, name: str, tmp_path: Path) -> ServeProcess:
    command = serve_command(
        "--model-uri", f"models:/{name}@champion", "--model-refresh-seconds", REFRESH_SECONDS
    )
    env = {"MLFLOW_TRACKING_URI": mlflow_server, "XDG_CACHE_HOME": str(tmp_path / "serve-cache")}
    return ServeProcess(command, tmp_path / "serve.log", env).start()


@pytest.mark.slow
def test_a_promoted_model_is_served_without_a_restart_or_a_failed_request(
    mlflow_server: str, dataset_dir: Path, sample_files: dict[str, Path], tmp_path: Path
) -> None:
    """Issue 32's end to end: train on the course data, promote past the gate, and the running service
    follows; train on wrong labels, promote is refused, and the service keeps its model."""
    from mlflow import MlflowClient

    name, cache, course = "followed", tmp_path / "cache", dataset_dir.parent
    registry = MlflowClient(mlflow_server)
    shipped = register(mlflow_server, default_model_path().parent, name)
    judged = ["--data", str(course), "--out", str(tmp_path / "evaluation")]
    done = cli(mlflow_server, cache, "promote", name, shipped, *judged)
    assert done.returncode == 0, done.stderr
    server = following(mlflow_server, name, tmp_path)
    try:
        assert served(server.base_url)["sha256"] == file_sha256(default_model_path())
        with SteadyClient(server.base_url, sample_files["Dog"].read_bytes()) as client:
            # A candidate: the course's images, the default recipe without int8 (another file).
            candidate = tmp_path / "candidate"
            done = cli(
                mlflow_server,
                cache,
                "train",
                "--data",
                str(course),
                "--out",
                str(candidate),
                "--register",
                name,
            )
            assert done.returncode == 0, done.stderr
            version = done.stdout.split(f"models:/{name}/", 1)[1].split()[0]
            done = cli(mlflow_server, cache, "promote", name, version, *judged)
            assert done.returncode == 0, done.stdout + done.stderr
            assert f"-> version {version} (passed the gate; it was version {shipped})" in done.stdout
            new_sha = file_sha256(candidate / "model.onnx")
            wait_for(lambda: served(server.base_url)["sha256"] == new_sha, 60, "the switch", server.logs)
            assert served(server.base_url)["registry_version"] == version
            answered_before = len(client.versions)
            wait_for(lambda: len(client.versions) > answered_before + 5, 30, "answers after", server.logs)

            # Wrong labels: cats called dogs and dogs called cats (every other image: enough to learn it).
            wrong = tmp_path / "wrong"
            for real, called in (("cat", "dog"), ("dog", "cat"), ("other", "other")):
                (wrong / called).mkdir(parents=True)
                for path in sorted((dataset_dir / real).glob("*.png"))[::2]:
                    shutil.copy(path, wrong / called / path.name)
            done = cli(
                mlflow_server,
                cache,
                "train",
                "--data",
                str(wrong),
                "--out",
                str(tmp_path / "w"),
                "--register",
                name,
            )
            assert done.returncode == 0, done.stderr
            bad = done.stdout.split(f"models:/{name}/", 1)[1].split()[0]
            done = cli(mlflow_server, cache, "promote", name, bad, *judged)
            assert done.returncode == 1
            assert "gate: colour: accuracy" in done.stdout
            assert f"stays at version {version}" in done.stderr
            assert registry.get_model_version_by_alias(name, "champion").version == version
            assert registry.get_model_version(name, bad).tags["gate.champion"] == "refused"
            time.sleep(4 * float(REFRESH_SECONDS))  # several looks at the alias
            assert served(server.base_url)["sha256"] == new_sha
    finally:
        server.stop()
    assert client.errors == []
    assert set(client.statuses) == {200}, client.statuses
    # Answers came from both versions, the old first, never back.
    first_new = client.versions.index(version)
    assert client.versions[:first_new] == [shipped] * first_new
    assert set(client.versions[first_new:]) == {version}
    assert first_new > 0


def another_file(model_dir: Path, out: Path) -> Path:
    """The default model with its graph's doc string changed: the same answers, another sha256."""
    import onnx

    out.mkdir(parents=True)
    graph = onnx.load(str(model_dir / "model.onnx"))
    graph.doc_string = "a copy, re-registered"
    onnx.save(graph, str(out / "model.onnx"))
    shutil.copy(model_dir / "model.json", out / "model.json")
    return out


def test_a_version_that_cannot_load_leaves_the_old_one_serving(
    mlflow_server: str, sample_files: dict[str, Path], tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    name = "followed-broken"
    registry = MlflowClient(mlflow_server)
    shipped = default_model_path().parent
    first = register(mlflow_server, shipped, name)
    registry.set_registered_model_alias(name, "champion", first)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.onnx").write_bytes(b"not an onnx graph")
    shutil.copy(shipped / "model.json", broken / "model.json")
    second = register(mlflow_server, broken, name)
    copy = another_file(shipped, tmp_path / "copy")
    third = register(mlflow_server, copy, name)

    server = following(mlflow_server, name, tmp_path)
    try:
        base = server.base_url
        assert served(base)["registry_version"] == first
        registry.set_registered_model_alias(name, "champion", second)  # as `promote --force` would
        wait_for(lambda: refreshes(base, "load_failed") >= 2, 30, "two failed loads", server.logs)
        assert served(base)["registry_version"] == first
        answer = httpx.post(f"{base}/upload", files={"file": ("x.png", sample_files["Cat"].read_bytes())})
        assert answer.status_code == 200
        assert server.logs().count(f"version {second} of models:/{name}@champion cannot be served") == 1

        registry.set_registered_model_alias(name, "champion", third)
        wait_for(lambda: served(base)["registry_version"] == third, 30, "the switch", server.logs)
        assert served(base)["sha256"] == file_sha256(copy / "model.onnx")
        assert refreshes(base, "switched") == 1
        # The metrics name the served version only; the old model's card gauges are gone.
        info = samples(base, "cdo_model_info")
        assert [labels["registry_version"] for labels, _ in info] == [third]
        accuracy = samples(base, "cdo_model_validation_accuracy")
        assert [labels["model_sha256"] for labels, _ in accuracy] == [file_sha256(copy / "model.onnx")]
    finally:
        server.stop()
