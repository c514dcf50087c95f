"""What one app instance owns, built by `create_app`: its settings, the served model and its phase."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from opentelemetry import trace

from cats_dogs_other.api.clients import TrustedProxies
from cats_dogs_other.auth.tokens import TokenValidator
from cats_dogs_other.feedback import FeedbackStore
from cats_dogs_other.inference.classifier import ImageClassifier
from cats_dogs_other.inference.service import InferenceService
from cats_dogs_other.models.source import ModelSource
from cats_dogs_other.observability.metrics import ModelExpectations, ServiceMetrics
from cats_dogs_other.settings import Settings


class Phase(StrEnum):
    """The life of a process, in this order only: a phase never goes back."""

    STARTING = "starting"  # loading the model, warming it up: /ready 503, predictions 503
    READY = "ready"
    DRAINING = "draining"  # SIGTERM received: /ready 503 so load balancers leave, predictions still served
    STOPPING = "stopping"  # the server is shutting down: predictions 503

    @property
    def serves_predictions(self) -> bool:
        return self in (Phase.READY, Phase.DRAINING)


_ORDER = list(Phase)


@dataclass(frozen=True)
class ServedModel:
    """The model being served, where it came from, and the engine that runs it: made together, once."""

    classifier: ImageClassifier
    source: ModelSource
    engine: InferenceService

    @classmethod
    def build(
        cls,
        classifier: ImageClassifier,
        source: ModelSource,
        settings: Settings,
        metrics: ServiceMetrics,
        tracer: trace.Tracer,
    ) -> ServedModel:
        engine = InferenceService.configured(classifier, settings, metrics, tracer)
        metrics.model_info.labels(*cls._info_labels(classifier, source)).set(1)
        metrics.serve_model(
            ModelExpectations(
                sha256=classifier.sha256,
                labels=classifier.labels,
                training_share=classifier.card.training_mix(),
                validation_accuracy=classifier.card.validation_accuracy(),
                unsure_below=settings.unsure_below,
                feedback=settings.feedback_database_url is not None,
            )
        )
        return cls(classifier, source, engine)

    @staticmethod
    def _info_labels(classifier: ImageClassifier, source: ModelSource) -> tuple[str, str, str, str]:
        return classifier.name, source.display_uri, classifier.sha256, source.details.get("version", "")

    def retire(self, metrics: ServiceMetrics, successor: ServedModel) -> None:
        """No longer served (`successor` is): its `cdo_model_info` series and its card's gauges go,
        unless they are the successor's too (the same file registered again)."""
        labels = self._info_labels(self.classifier, self.source)
        if labels != self._info_labels(successor.classifier, successor.source):
            metrics.model_info.remove(*labels)
        if self.classifier.sha256 != successor.classifier.sha256:
            metrics.retire_model(self.classifier.sha256, self.classifier.labels)

    def describe(self) -> str:
        """One short log line's worth: name, hash, source."""
        return f"{self.classifier.name} (sha256 {self.classifier.sha256[:12]}) from {self.source.describe()}"


@dataclass
class ServiceState:
    settings: Settings
    token_validator: TokenValidator | None
    metrics: ServiceMetrics = field(default_factory=ServiceMetrics)
    tracer: trace.Tracer = field(default_factory=trace.NoOpTracer)
    model: ServedModel | None = None
    feedback: FeedbackStore | None = None  # FEEDBACK_DATABASE_URL set: POST /feedback stores here
    phase: Phase = Phase.STARTING
    proxies: TrustedProxies = field(init=False)  # TRUSTED_PROXIES, parsed once

    def __post_init__(self) -> None:
        self.proxies = TrustedProxies(self.settings.trusted_proxies)

    def advance(self, phase: Phase) -> None:
        """Move on to `phase`, unless the process is already past it (a late warm-up after SIGTERM must
        not make a draining process ready again)."""
        if _ORDER.index(phase) > _ORDER.index(self.phase):
            if phase is Phase.READY and self.model is None:
                raise RuntimeError("ready without a model")
            self.phase = phase

    @property
    def predicting_model(self) -> ServedModel | None:
        """The model, while predictions are served (ready or draining); None otherwise."""
        return self.model if self.phase.serves_predictions else None
