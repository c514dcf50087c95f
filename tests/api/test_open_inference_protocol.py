"""The Open Inference Protocol (KServe v2), driven by the real `tritonclient[http]` client and plain JSON."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from cats_dogs_other.api import create_app
from cats_dogs_other.inference.classifier import ImageClassifier
from cats_dogs_other.settings import Settings
from tests.servers import ServerThread, ready_server


@pytest.fixture(scope="module")
def server(classifier: ImageClassifier) -> Iterator[str]:
    app = create_app(Settings(auth_disabled=True), classifier)
    with ready_server(app) as base_url:
        yield base_url


@pytest.fixture
def client(server: str) -> Iterator[triton.InferenceServerClient]:
    connection = triton.InferenceServerClient(url=server.removeprefix("http://"))
    yield connection
    connection.close()


def image_input(paths: list[Path], binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput("image", [len(paths)], "BYTES")
    tensor.set_data_from_numpy(
        np.array([p.read_bytes() for p in paths], dtype=np.object_), binary_data=binary
    )
    return tensor


def test_health_and_metadata(client: triton.InferenceServerClient, classifier: ImageClassifier) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("cats-dogs-other")
    assert not client.is_model_ready("no-such-model")
    metadata = client.get_model_metadata("cats-dogs-other")
    assert metadata["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    assert {o["name"]: o["shape"] for o in metadata["outputs"]} == {"probabilities": [-1, 3], "label": [-1]}


# tritonclient sends BYTES inputs in the binary extension (raw image bytes are not UTF-8 JSON strings);
# outputs come back either way.
@pytest.mark.parametrize("binary", [True, False], ids=["binary-outputs", "json-outputs"])
def test_infer_with_tritonclient(
    client: triton.InferenceServerClient,
    classifier: ImageClassifier,
    sample_files: dict[str, Path],
    binary: bool,
) -> None:
    paths = [sample_files["Cat"], sample_files["Dog"], sample_files["Other"]]
    outputs = (
        None
        if binary
        else [
            triton.InferRequestedOutput("probabilities", binary_data=False),
            triton.InferRequestedOutput("label", binary_data=False),
        ]
    )
    result = client.infer("cats-dogs-other", [image_input(paths)], outputs=outputs, request_id="r-1")
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (3, 3)
    expected = np.array([p.values for p in classifier.predict([p.read_bytes() for p in paths])])
    assert np.abs(probabilities - expected).max() < 1e-6
    labels = [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("label")]
    assert labels == ["Cat", "Dog", "Other"]
    assert result.get_response()["id"] == "r-1"


def test_infer_with_plain_json_and_base64(server: str, sample_files: dict[str, Path]) -> None:
    data = [base64.b64encode(sample_files[label].read_bytes()).decode() for label in ("Dog", "Cat")]
    body = {"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "data": data}]}
    response = httpx.post(f"{server}/v2/models/cats-dogs-other/infer", json=body, timeout=30)
    assert response.status_code == 200
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["label"]["data"] == ["Dog", "Cat"]
    assert outputs["probabilities"]["shape"] == [2, 3]
    assert abs(sum(outputs["probabilities"]["data"][:3]) - 1) < 1e-5


def test_errors_are_reported_the_v2_way(
    client: triton.InferenceServerClient, server: str, tmp_path: Path
) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    with pytest.raises(InferenceServerException, match="Not a supported image"):
        client.infer("cats-dogs-other", [image_input([bad])])
    with pytest.raises(InferenceServerException, match="Unknown model"):
        client.infer("resnet50", [image_input([bad])])
    response = httpx.post(f"{server}/v2/models/cats-dogs-other/infer", json={"inputs": []}, timeout=30)
    assert response.status_code == 400
    assert "inputs: List should have at least 1 item" in response.json()["error"]
    wrong_type = {"inputs": [{"name": "image", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
    assert (
        "BYTES tensor"
        in httpx.post(f"{server}/v2/models/cats-dogs-other/infer", json=wrong_type).json()["error"]
    )


def test_infer_needs_a_token_when_auth_is_on(
    classifier: ImageClassifier, sample_files: dict[str, Path]
) -> None:
    app = create_app(Settings(oauth2_issuer="http://127.0.0.1:9/", oauth2_audience="api"), classifier)
    with ServerThread(app) as base_url:
        connection = triton.InferenceServerClient(url=base_url.removeprefix("http://"))
        assert connection.is_server_live()  # health stays open
        with pytest.raises(InferenceServerException) as refused:
            connection.infer("cats-dogs-other", [image_input([sample_files["Cat"]])])
        assert refused.value.status() == "401"
        connection.close()


def test_a_client_that_pins_the_served_version_is_answered(
    client: triton.InferenceServerClient, server: str, sample_files: dict[str, Path]
) -> None:
    result = client.infer("cats-dogs-other", [image_input([sample_files["Dog"]])], model_version="1")
    assert [x.decode() for x in result.as_numpy("label")] == ["Dog"]
    assert result.get_response()["model_version"] == "1"
    other = httpx.post(
        f"{server}/v2/models/cats-dogs-other/versions/2/infer",
        json={"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["eA=="]}]},
    )
    assert other.status_code == 404
    assert other.headers["content-type"] == "application/problem+json"
    assert other.json()["error"] == other.json()["detail"]
    assert "serves '1'" in other.json()["detail"]


def test_a_bad_image_among_several_names_its_position(server: str, sample_files: dict[str, Path]) -> None:
    good = base64.b64encode(sample_files["Cat"].read_bytes()).decode()
    body = {
        "inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "data": [good, "bm90IGFuIGltYWdl"]}]
    }
    response = httpx.post(f"{server}/v2/models/cats-dogs-other/infer", json=body)
    assert response.status_code == 415
    assert response.json()["error"].startswith("Image 1: ")
    assert response.json()["code"] == "unsupported"
