"""OpenTelemetry spans, captured with the SDK's in-memory exporter: checked for names, nesting and content."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cats_dogs_other.api import create_app
from cats_dogs_other.inference.classifier import ImageClassifier
from cats_dogs_other.observability.tracing import tracing_from_environment
from cats_dogs_other.settings import Settings
from tests.api.conftest import wait_until_ready


def in_memory_tracer() -> tuple[trace.Tracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test"), exporter


def traced_upload(
    classifier: ImageClassifier, image: bytes, path: str = "/upload", headers: dict[str, str] | None = None
) -> dict[str, ReadableSpan]:
    """One upload to a ready in-process app with an in-memory exporter; its spans by name."""
    tracer, exporter = in_memory_tracer()
    with TestClient(create_app(Settings(auth_disabled=True), classifier, tracer=tracer)) as client:
        wait_until_ready(client)
        exporter.clear()
        response = client.post(path, files={"file": ("c.png", image)}, headers=headers or {})
        assert response.status_code == 200
    return {span.name: span for span in exporter.get_finished_spans()}


def test_upload_is_traced_step_by_step(classifier: ImageClassifier, sample_files: dict[str, Path]) -> None:
    tracer, exporter = in_memory_tracer()
    with TestClient(create_app(Settings(auth_disabled=True), classifier, tracer=tracer)) as client:
        wait_until_ready(client)
        exporter.clear()
        response = client.post(
            "/upload",
            files={"file": ("c.png", sample_files["Cat"].read_bytes())},
            headers={"X-Request-ID": "trace-me"},
        )
        assert response.status_code == 200
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert {"POST /upload", "decode", "queue_wait", "inference"} <= set(spans)
    root = spans["POST /upload"]
    assert root.kind is trace.SpanKind.SERVER
    assert root.attributes["http.route"] == "/upload"
    assert root.attributes["http.response.status_code"] == 200
    assert root.attributes["request.id"] == "trace-me"
    for step in ("decode", "queue_wait", "inference"):
        assert spans[step].parent is not None
        assert spans[step].parent.span_id == root.context.span_id, step
        assert spans[step].context.trace_id == root.context.trace_id
    assert spans["decode"].attributes["image.bytes"] == len(sample_files["Cat"].read_bytes())
    assert spans["inference"].attributes["batch.size"] == 1
    assert spans["queue_wait"].end_time <= spans["inference"].start_time
    assert root.start_time <= spans["decode"].start_time <= spans["decode"].end_time <= root.end_time


def test_a_callers_traceparent_joins_its_trace(
    classifier: ImageClassifier, sample_files: dict[str, Path]
) -> None:
    trace_id, caller_span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    spans = traced_upload(
        classifier,
        sample_files["Cat"].read_bytes(),
        headers={"traceparent": f"00-{trace_id}-{caller_span_id}-01"},
    )
    root = spans["POST /upload"]
    assert root.parent is not None
    assert root.parent.span_id == int(caller_span_id, 16)  # a child of the caller's span
    for step in ("POST /upload", "decode", "queue_wait", "inference"):
        assert spans[step].context.trace_id == int(trace_id, 16), step


def test_spans_hold_no_query_string(classifier: ImageClassifier, sample_files: dict[str, Path]) -> None:
    spans = traced_upload(
        classifier, sample_files["Cat"].read_bytes(), "/upload?access_token=SECRET-IN-QUERY"
    )
    recorded = repr([dict(span.attributes or {}) for span in spans.values()])
    assert "/upload" in recorded
    assert "SECRET-IN-QUERY" not in recorded


def test_tracing_is_off_unless_an_endpoint_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    tracer, provider = tracing_from_environment()
    assert isinstance(tracer, trace.NoOpTracer)
    assert provider is None


def test_spans_are_exported_over_otlp_http_when_configured(
    monkeypatch: pytest.MonkeyPatch, classifier: ImageClassifier, sample_files: dict[str, Path]
) -> None:
    received: list[tuple[str, bytes]] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append((self.path, self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    collector = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{collector.server_address[1]}")
    try:
        with TestClient(create_app(Settings(auth_disabled=True), classifier)) as client:
            wait_until_ready(client)
            assert (
                client.post(
                    "/upload", files={"file": ("c.png", sample_files["Cat"].read_bytes())}
                ).status_code
                == 200
            )
        # Leaving the app flushed the batch: a real OTLP/HTTP export reached the collector.
        assert [path for path, _ in received] == ["/v1/traces"]
        payload = received[0][1]
        for name in (b"POST /upload", b"decode", b"queue_wait", b"inference", b"cats-dogs-other"):
            assert name in payload
    finally:
        collector.shutdown()
