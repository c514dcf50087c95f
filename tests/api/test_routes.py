"""The course's contract and the added routes, driven in-process through the ASGI app."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from openapi_spec_validator import validate

from cats_dogs_other import __version__
from cats_dogs_other.api import create_app
from cats_dogs_other.inference.classifier import ImageClassifier
from cats_dogs_other.settings import Settings


def test_health_is_the_course_answer(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "OK"}


def test_ready_once_warmed_up(client: TestClient) -> None:
    assert client.get("/ready").json() == {"status": "ready"}


def test_upload_classifies_real_images(client: TestClient, labelled_files: list[tuple[str, Path]]) -> None:
    for label, path in labelled_files[::10]:
        response = client.post("/upload", files={"file": (path.name, path.read_bytes(), "image/png")})
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"prediction", "values"}
        assert body["prediction"] == label, path.name
        assert len(body["values"]) == 3
        assert abs(sum(body["values"]) - 1) < 1e-5


def test_upload_ignores_the_declared_content_type(client: TestClient, sample_files: dict[str, Path]) -> None:
    data = sample_files["Dog"].read_bytes()
    response = client.post("/upload", files={"file": ("dog.txt", data, "text/plain")})
    assert response.status_code == 200
    assert response.json()["prediction"] == "Dog"


def test_upload_values_match_the_engine(
    client: TestClient, classifier: ImageClassifier, sample_files: dict[str, Path]
) -> None:
    data = sample_files["Other"].read_bytes()
    (expected,) = classifier.predict([data])
    response = client.post("/upload", files={"file": ("x.png", data)})
    assert response.json() == expected.as_dict()


def test_predict_answers_each_file_in_order(client: TestClient, sample_files: dict[str, Path]) -> None:
    parts = [
        ("files", ("dog.png", sample_files["Dog"].read_bytes(), "image/png")),
        ("files", ("notes.txt", b"just some text", "text/plain")),
        ("files", ("cat.png", sample_files["Cat"].read_bytes(), "image/png")),
        ("files", ("empty.png", b"", "image/png")),
    ]
    response = client.post("/predict", files=parts)
    assert response.status_code == 200
    results = response.json()
    assert [r["filename"] for r in results] == ["dog.png", "notes.txt", "cat.png", "empty.png"]
    assert results[0]["prediction"] == "Dog"
    assert results[2]["prediction"] == "Cat"
    assert results[1]["error"]["status"] == 415
    assert results[1]["error"]["code"] == "unsupported"
    assert "Not a supported image" in results[1]["error"]["detail"]
    assert results[3]["error"]["code"] == "empty"


def test_predict_with_one_file(client: TestClient, sample_files: dict[str, Path]) -> None:
    response = client.post("/predict", files=[("files", ("o.png", sample_files["Other"].read_bytes()))])
    assert [r["prediction"] for r in response.json()] == ["Other"]


def test_version_describes_service_and_model(client: TestClient, classifier: ImageClassifier) -> None:
    body = client.get("/version").json()
    assert body["version"] == __version__
    assert body["model"]["sha256"] == classifier.sha256
    assert body["model"]["labels"] == ["Cat", "Dog", "Other"]
    assert body["model"]["input_size"] == [224, 224]
    assert body["model"]["source"] == "builtin:default"
    assert body["auth"]["mode"] == "disabled"


def test_swagger_and_redoc_pages(client: TestClient) -> None:
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "swagger-ui" in docs.text
    redoc = client.get("/redoc")
    assert redoc.status_code == 200
    assert "redoc" in redoc.text.lower()


def test_openapi_document_is_valid_and_complete(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    validate(document)
    paths = document["paths"]
    assert {"/health", "/ready", "/version", "/upload", "/predict"} <= set(paths)
    for path, operations in paths.items():
        for method, operation in operations.items():
            assert operation.get("summary"), f"{method} {path} has no summary"
            assert operation.get("tags"), f"{method} {path} has no tag"
    upload = paths["/upload"]["post"]
    for status in ("400", "413", "415", "422", "503"):
        content = upload["responses"][status]["content"]
        assert list(content) == ["application/problem+json"]
        assert content["application/problem+json"]["schema"]["$ref"].endswith("/ProblemDetails")
    multipart = upload["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert multipart["required"] == ["file"]
    assert multipart["properties"]["file"]["format"] == "binary"
    many = paths["/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert many["properties"]["files"]["type"] == "array"
    examples = document["components"]["schemas"]["PredictionResponse"]["examples"]
    assert examples[0]["prediction"] == "Cat"
    assert "security" not in upload  # auth is off in this app: the document says so
    assert "securitySchemes" not in document.get("components", {})


def test_openapi_declares_the_bearer_scheme_when_auth_is_on() -> None:
    protected = create_app(Settings(oauth2_issuer="https://issuer.example/", oauth2_audience="api")).openapi()
    validate(protected)
    scheme = protected["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer", "JWT")
    upload = protected["paths"]["/upload"]["post"]
    assert upload["security"] == [{"bearerAuth": []}]
    assert {"401", "403"} <= set(upload["responses"])
    assert "security" not in protected["paths"]["/health"]["get"]


@pytest.mark.parametrize("incoming", ["trace-42", "a" * 128])
def test_request_id_is_honoured(client: TestClient, incoming: str) -> None:
    response = client.get("/health", headers={"X-Request-ID": incoming})
    assert response.headers["x-request-id"] == incoming


@pytest.mark.parametrize("incoming", ["", "a" * 129, "evil\tvalue", "x y"])
def test_unsafe_request_id_is_replaced(client: TestClient, incoming: str) -> None:
    response = client.get("/health", headers={"X-Request-ID": incoming})
    generated = response.headers["x-request-id"]
    assert generated != incoming
    assert len(generated) == 32


def test_cors_is_off_by_default(client: TestClient) -> None:
    response = client.get("/health", headers={"Origin": "https://example.org"})
    assert "access-control-allow-origin" not in response.headers


def test_cors_origins_are_configurable(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(cors_origins="https://app.example.org, https://other.example.org")
    allowed = client.options(
        "/upload",
        headers={"Origin": "https://app.example.org", "Access-Control-Request-Method": "POST"},
    )
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.org"
    erase = client.options(  # a page elsewhere may let people erase their feedback
        "/feedback",
        headers={"Origin": "https://app.example.org", "Access-Control-Request-Method": "DELETE"},
    )
    assert erase.status_code == 200
    assert "DELETE" in erase.headers["access-control-allow-methods"]
    refused = client.get("/health", headers={"Origin": "https://evil.example.org"})
    assert "access-control-allow-origin" not in refused.headers
