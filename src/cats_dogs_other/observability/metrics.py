"""Prometheus metrics, one registry per app (no module-level state: tests build many apps).

With `--workers N` each process has its own registry; scrape each pod once per worker or run one worker
per pod (the Kubernetes setup in deploy/ does the latter).
"""

from __future__ import annotations

from collections import deque
from contextlib import suppress
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

REFUSAL_REASONS = ("unauthenticated", "forbidden", "over_share", "full", "keys_unavailable")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MODEL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 32, 64)
DOCUMENT_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200)
# The winning label's value; with three labels it is at least 1/3. Finer near 1, where most answers are.
TOP_VALUE_BUCKETS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0)
# Pixels of the images sent: icons, the course's images (0.04-0.25 MP), screenshots, phone photos (12 MP).
PIXEL_BUCKETS = (16_384, 65_536, 262_144, 1_000_000, 2_000_000, 4_000_000, 8_000_000, 12_000_000, 24_000_000)


@dataclass(frozen=True)
class ModelExpectations:
    """What the served model's card says it learned: the reference the live answers are compared with."""

    sha256: str
    labels: list[str]
    training_share: dict[str, float]  # label -> share of the training images; empty when the card has none
    validation_accuracy: float | None
    unsure_below: float  # answers whose top value is under this count as unsure (UNSURE_BELOW)
    feedback: bool = False  # the service stores feedback (FEEDBACK_DATABASE_URL is set)


@dataclass(frozen=True)
class _Behaviour:
    """One model's behaviour series, resolved once (a labels() lookup per answer costs a lock)."""

    answers: dict[str, Counter]
    top_value: Histogram
    unsure: Counter
    image_pixels: Histogram
    unsure_below: float


class ServiceMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, accuracy_window: int = 200) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "cdo_http_requests",
            "HTTP requests answered, by route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "cdo_http_request_duration_seconds",
            "Time to answer, by route and status.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "cdo_inference_batch_size", "Images per model call.", buckets=BATCH_BUCKETS, registry=r
        )
        self.queue_wait = Histogram(
            "cdo_inference_queue_wait_seconds",
            "Time an image waited for its model call.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.model_latency = Histogram(
            "cdo_model_inference_seconds", "Duration of one model call.", buckets=MODEL_BUCKETS, registry=r
        )
        self.queue_depth = Gauge("cdo_inference_queue_depth", "Images waiting for the model.", registry=r)
        self.in_flight = Gauge(
            "cdo_inference_requests_in_progress",
            "Prediction requests admitted and not yet answered (bounded by cdo_admission_limit).",
            registry=r,
        )
        self.admission_limit = Gauge(
            "cdo_admission_limit",
            "Prediction requests that may be in progress now: what the measured rate answers within "
            "MAX_QUEUE_WAIT_MS, at most QUEUE_MAX.",
            registry=r,
        )
        self.service_rate = Gauge(
            "cdo_service_rate_requests_per_second",
            "Prediction requests answered per second of busy time, as admission measures it.",
            registry=r,
        )
        self.decode_memory = Gauge(
            "cdo_decode_memory_reserved_bytes",
            "Bytes reserved by images being decoded (bounded by DECODE_MEMORY_BYTES).",
            registry=r,
        )
        self.decode_memory_budget = Gauge(
            "cdo_decode_memory_budget_bytes",
            "DECODE_MEMORY_BYTES: what images being decoded may reserve at once (derived from "
            "MEMORY_LIMIT_BYTES unless set).",
            registry=r,
        )
        self.memory_limit = Gauge(
            "cdo_memory_limit_bytes",
            "MEMORY_LIMIT_BYTES: the memory the budgets are sized from (the container's limit by default).",
            registry=r,
        )
        self.body_memory = Gauge(
            "cdo_request_body_bytes_in_flight",
            "Bytes of request bodies being received or held (bounded by BODY_MEMORY_BYTES).",
            registry=r,
        )
        self.auth_failures = Counter(
            "cdo_auth_failures", "Requests refused by the token check, by reason.", ["reason"], registry=r
        )
        self.refusals = Counter(
            "cdo_refusals",
            "Prediction requests refused before any work, by reason: unauthenticated (401), forbidden "
            "(403, the token lacks the scope), over_share (503, the client holds its share of a full "
            "service), full (503), keys_unavailable (503, the identity provider's keys cannot be fetched).",
            ["reason"],
            registry=r,
        )
        for reason in REFUSAL_REASONS:  # a series for each from the start: rates and alerts see zeros
            self.refusals.labels(reason)
        self.documents = Counter(
            "cdo_documents",
            "PDF documents received, by outcome: read, or the reason they were refused.",
            ["outcome"],
            registry=r,
        )
        self.document_pages = Histogram(
            "cdo_document_pages", "Pages per PDF document read.", buckets=DOCUMENT_BUCKETS, registry=r
        )
        self.document_images = Histogram(
            "cdo_document_images",
            "Images found per PDF document read (copies of an earlier image included).",
            buckets=DOCUMENT_BUCKETS,
            registry=r,
        )
        self.model_info = Gauge(
            "cdo_model_info",
            "The served model (value 1).",
            ["name", "source", "sha256", "registry_version"],
            registry=r,
        )
        self.model_refreshes = Counter(
            "cdo_model_refreshes",
            "Following a registry alias (MODEL_REFRESH_SECONDS): switched (a new version is served), "
            "load_failed (the new version could not be loaded or warmed; the old one serves on), "
            "lookup_failed (the registry could not say where the alias points).",
            ["outcome"],
            registry=r,
        )

        # How the model behaves, by the served model's sha256: one model per process, so one value at a
        # time (two while versions roll over, across pods), whatever clients send.
        self.predictions = Counter(
            "cdo_predictions",
            "Answers given (every classified image, PDF images included), by the label the model chose.",
            ["model_sha256", "label"],
            registry=r,
        )
        self.top_value = Histogram(
            "cdo_prediction_top_value",
            "The winning label's value (a probability for the default model): how sure each answer was.",
            ["model_sha256"],
            buckets=TOP_VALUE_BUCKETS,
            registry=r,
        )
        self.unsure = Counter(
            "cdo_predictions_unsure",
            "Answers whose top value was under UNSURE_BELOW.",
            ["model_sha256"],
            registry=r,
        )
        self.image_pixels = Histogram(
            "cdo_image_pixels",
            "Width x height of each image classified, as sent (before it is reduced for the model).",
            ["model_sha256"],
            buckets=PIXEL_BUCKETS,
            registry=r,
        )
        self.training_share = Gauge(
            "cdo_model_training_label_share",
            "Share of each label among the served model's training images (its card): the mix the live "
            "answers are compared with.",
            ["model_sha256", "label"],
            registry=r,
        )
        self.validation_accuracy = Gauge(
            "cdo_model_validation_accuracy",
            "The served model's validation accuracy (its card): what the feedback accuracy is compared with.",
            ["model_sha256"],
            registry=r,
        )
        self.unsure_below = Gauge(
            "cdo_prediction_unsure_below",
            "UNSURE_BELOW: a top value under it counts as an unsure answer.",
            ["model_sha256"],
            registry=r,
        )
        # Per served model (by sha256), its series resolved once; an engine counts under its own model's,
        # so answers finishing on the old model after an alias moved are not the new one's.
        self._behaviour: dict[str, _Behaviour] = {}
        self._served: str | None = None

        self.feedback = Counter(
            "cdo_feedback",
            "Feedback stored, by the label people gave and the one they were shown ('unknown' if not sent).",
            ["label", "predicted"],
            registry=r,
        )
        self.feedback_verdicts = Counter(
            "cdo_feedback_verdicts",
            "Feedback on the served model's answers: right (label = predicted) or wrong.",
            ["model_sha256", "verdict"],
            registry=r,
        )
        self.feedback_accuracy = Gauge(
            "cdo_feedback_accuracy",
            "Share of 'right' among this process's last FEEDBACK_ACCURACY_WINDOW verdicts on the served "
            "model: a live accuracy estimate (fleet-wide: the ratio of cdo_feedback_verdicts_total rates).",
            ["model_sha256"],
            registry=r,
        )
        self.feedback_unavailable = Counter(
            "cdo_feedback_unavailable", "Feedback refused because its database was unavailable.", registry=r
        )
        self.feedback_refusals = Counter(
            "cdo_feedback_refusals",
            "Feedback refused by what the store keeps: quota (429, the sender's daily quota), store_full "
            "(507, past FEEDBACK_MAX_STORE_BYTES), anonymous (403, anonymous feedback is off).",
            ["reason"],
            registry=r,
        )
        for reason in ("quota", "store_full", "anonymous"):
            self.feedback_refusals.labels(reason)
        self.feedback_store_bytes = Gauge(
            "cdo_feedback_store_bytes",
            "Bytes the feedback store takes, as this process last measured it (after each write and purge).",
            registry=r,
        )
        self.feedback_store_max_bytes = Gauge(
            "cdo_feedback_store_max_bytes",
            "FEEDBACK_MAX_STORE_BYTES: past it, new images are refused (507); absent without a cap.",
            registry=r,
        )
        self.feedback_purged = Counter(
            "cdo_feedback_purged",
            "Feedback deleted by this process, by kind: expired_labels (past FEEDBACK_RETENTION_DAYS), "
            "images (nobody's label refers to them any more), erased_labels (people erasing what they sent).",
            ["kind"],
            registry=r,
        )
        for kind in ("expired_labels", "images", "erased_labels"):
            self.feedback_purged.labels(kind)
        self._verdicts: deque[bool] = deque(maxlen=accuracy_window)

    def refused_token(self, failure: str, refusal: str) -> None:
        """A request refused by the token check: why the token failed, and what the refusal counts as."""
        self.auth_failures.labels(failure).inc()
        self.refusals.labels(refusal).inc()

    def serve_model(self, model: ModelExpectations) -> None:
        """Label the behaviour metrics with the served model, and publish what its card expects. Every
        label's counter starts at 0, so a label the model never chooses still has a series (a share of 0)."""
        sha = model.sha256
        self._verdicts.clear()  # the live accuracy is the served model's own
        self._behaviour[sha] = _Behaviour(
            answers={label: self.predictions.labels(sha, label) for label in model.labels},
            top_value=self.top_value.labels(sha),
            unsure=self.unsure.labels(sha),
            image_pixels=self.image_pixels.labels(sha),
            unsure_below=model.unsure_below,
        )
        self._served = sha
        self.unsure_below.labels(sha).set(model.unsure_below)
        for label, share in model.training_share.items():
            self.training_share.labels(sha, label).set(share)
        if model.validation_accuracy is not None:
            self.validation_accuracy.labels(sha).set(model.validation_accuracy)
        if model.feedback:  # zeroed too: Prometheus's rate() cannot see a series' first increments
            for verdict in ("right", "wrong"):
                self.feedback_verdicts.labels(sha, verdict)
            for label in model.labels:
                for shown in [*model.labels, "unknown"]:
                    self.feedback.labels(label, shown)

    def retire_model(self, sha256: str, labels: list[str]) -> None:
        """A model no longer served here: the gauges from its card (and its live accuracy) go, so a
        dashboard compares the live answers with the served model's card only. Counters stay, as
        counters must."""
        gauges: list[tuple[Gauge, tuple[str, ...]]] = [
            (self.validation_accuracy, ()),
            (self.unsure_below, ()),
            (self.feedback_accuracy, ()),
        ]
        gauges += [(self.training_share, (label,)) for label in labels]
        for gauge, rest in gauges:
            with suppress(KeyError):  # a series the card never set
                gauge.remove(sha256, *rest)

    def observe_prediction(self, label: str, top_value: float, model_sha256: str | None = None) -> None:
        """An answer of the model `model_sha256` (default: the one served now)."""
        behaviour = self._behaviour.get(model_sha256 or self._served or "")
        if behaviour is None or label not in behaviour.answers:
            return  # no model described yet (an engine built without one)
        behaviour.answers[label].inc()
        behaviour.top_value.observe(top_value)
        if top_value < behaviour.unsure_below:
            behaviour.unsure.inc()

    def observe_image(self, pixels: int, model_sha256: str | None = None) -> None:
        behaviour = self._behaviour.get(model_sha256 or self._served or "")
        if behaviour is not None:
            behaviour.image_pixels.observe(pixels)

    def observe_feedback(
        self, label: str, predicted: str | None, model_sha256: str | None, served: str
    ) -> None:
        """Count a stored correction; when it judges the served model's answer, update the estimate.
        Hashes of other models are not label values: clients choose them, Prometheus must not."""
        self.feedback.labels(label, predicted or "unknown").inc()
        if predicted is None or model_sha256 != served:
            return
        right = predicted == label
        self.feedback_verdicts.labels(served, "right" if right else "wrong").inc()
        self._verdicts.append(right)
        self.feedback_accuracy.labels(served).set(sum(self._verdicts) / len(self._verdicts))

    def observe_batch(self, size: int, waits: list[float]) -> None:
        self.batch_size.observe(size)
        for wait in waits:
            self.queue_wait.observe(wait)

    def observe_document(self, outcome: str, pages: int = 0, images: int = 0) -> None:
        self.documents.labels(outcome).inc()
        if outcome == "read":
            self.document_pages.observe(pages)
            self.document_images.observe(images)

    def render(self) -> bytes:
        return generate_latest(self.registry)
