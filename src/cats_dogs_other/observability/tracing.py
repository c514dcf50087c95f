"""OpenTelemetry tracing: off unless OTEL_EXPORTER_OTLP_ENDPOINT is set, then exported over OTLP/HTTP.

Each app gets its own tracer provider (nothing global), so tests pass one with an in-memory exporter.
Spans: the request (`POST /upload`), and under it `auth`, `decode`, `queue_wait` and `inference` (with the
batch size), the steps the course's tracing chapter looks at to find what is slow.
"""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from cats_dogs_other import __version__

INSTRUMENTATION = "cats_dogs_other"


def tracing_from_environment() -> tuple[trace.Tracer, TracerProvider | None]:
    """A real tracer (and its provider, to flush at shutdown) when an OTLP endpoint is configured, else a
    no-op tracer that costs nothing."""
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") and not os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        return trace.NoOpTracer(), None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    service = os.environ.get("OTEL_SERVICE_NAME", "cats-dogs-other")
    provider = TracerProvider(
        resource=Resource.create({"service.name": service, "service.version": __version__})
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # endpoint, headers from OTEL_* env
    return provider.get_tracer(INSTRUMENTATION, __version__), provider
