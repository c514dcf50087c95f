"""What one app instance owns: its settings, its model and whether it is ready. Built by `create_app`."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request
from opentelemetry import trace

from cats_dogs_other.auth.tokens import TokenValidator
from cats_dogs_other.inference.classifier import ImageClassifier
from cats_dogs_other.inference.service import BatchingConfig, InferenceService
from cats_dogs_other.models.source import ModelSource
from cats_dogs_other.observability.metrics import ServiceMetrics
from cats_dogs_other.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    classifier: ImageClassifier | None = None
    inference: InferenceService | None = None
    ready: bool = False
    draining: bool = False  # SIGTERM received: tell load balancers, keep serving
    stopping: bool = False
    model_source: ModelSource | None = None
    token_validator: TokenValidator | None = None
    metrics: ServiceMetrics = field(default_factory=ServiceMetrics)
    tracer: trace.Tracer = field(default_factory=trace.NoOpTracer)

    def attach(self, classifier: ImageClassifier, source: ModelSource) -> None:
        self.classifier = classifier
        settings = self.settings
        batching = BatchingConfig(settings.batch_max_size, settings.batch_max_wait_ms, settings.queue_max)
        self.inference = InferenceService(
            classifier,
            settings.max_pixels,
            batching,
            self.metrics,
            self.tracer,
            decode_memory_bytes=settings.decode_memory_bytes,
        )
        self.metrics.model_info.labels(
            classifier.name, source.display_uri, classifier.sha256, source.details.get("version", "")
        ).set(1)
        self.model_source = source


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime
