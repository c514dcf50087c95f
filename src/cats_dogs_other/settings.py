"""Configuration from environment variables (and matching CLI flags), validated once at start.

The knobs are grouped by concern, one class each (`LimitSettings`, `AuthSettings`, ...), so that code
which needs one concern can ask for it alone (`LimitSettings()` reads only the limits) and `serve
--help` lists them in groups. `Settings` is all of them; the environment names stay flat: a field's
name in upper case (`MAX_UPLOAD_BYTES`), whatever its group.
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, AliasChoices, BeforeValidator, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from cats_dogs_other.inference.limits import (
    DEFAULT_BODY_MEMORY_BYTES,
    REFERENCE_MEMORY_LIMIT_BYTES,
    DocumentLimits,
    decode_memory_for,
    max_pixels_for,
)
from cats_dogs_other.memory import cgroup_memory_limit
from cats_dogs_other.models.source import MlflowRegistry
from cats_dogs_other.urls import require_https_unless_loopback

if TYPE_CHECKING:
    from cats_dogs_other.feedback.store import FeedbackPolicy

KiB = 1024
MiB = 1024 * 1024


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _networks(value: list[str]) -> list[str]:
    for item in value:
        ipaddress.ip_network(item, strict=False)  # ValueError names the bad entry
    return value


# A list given as one comma-separated string (environment variable or flag), not as JSON.
CommaSeparated = Annotated[list[str], NoDecode, BeforeValidator(_split_commas)]


class SettingsGroup(BaseSettings):
    """One concern's knobs, read from the environment by their upper-case names."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")


class ServerSettings(SettingsGroup):
    """Where the service listens, how many processes, and how it stops."""

    host: str = Field("0.0.0.0", description="Interface to listen on.")
    port: int = Field(8080, ge=0, le=65535, description="TCP port to listen on.")
    workers: int = Field(1, ge=1, le=64, description="Server processes (each loads its own model).")
    cors_origins: CommaSeparated = Field(
        default_factory=list, description="Origins allowed by CORS, comma-separated; empty: CORS off."
    )
    shutdown_drain_seconds: float = Field(
        5.0, ge=0, description="After SIGTERM: /ready answers 503 while requests are still served, this long."
    )
    shutdown_grace_seconds: float = Field(
        30.0, ge=0, description="Then: time in-flight requests get to finish."
    )


class ModelSettings(SettingsGroup):
    """Which model is served, where it is fetched from, and the threads it runs on."""

    model_uri: str | None = Field(
        None,
        validation_alias=AliasChoices("model_uri", "model_path"),
        description="The model: a .onnx/.keras/.h5 path or folder, models:/NAME/VERSION, models:/NAME@ALIAS "
        "or runs:/RUN_ID/PATH (MLFLOW_TRACKING_URI); default: the built-in model. MODEL_PATH works too.",
    )
    model_cache_dir: Path | None = Field(None, description="Where registry models are downloaded once.")
    model_refresh_seconds: float = Field(
        0,
        ge=0,
        description="With MODEL_URI=models:/NAME@ALIAS: how often to look whether the alias moved, and if so "
        "load, warm and serve its new version without a restart (0: serve the version found at start).",
    )
    mlflow_tracking_uri: str | None = Field(
        None, description="The MLflow server that models:/ and runs:/ URIs are fetched from."
    )
    mlflow_http_request_max_retries: int = Field(
        1, ge=0, description="Retries of one MLflow request (MLflow's default would retry for minutes)."
    )
    mlflow_http_request_timeout: int = Field(10, gt=0, description="Seconds one MLflow request may take.")
    inference_runtime: Literal["auto", "onnxruntime", "openvino"] = Field(
        "auto",
        description="What runs an ONNX model: onnxruntime, openvino (the `openvino` extra), or auto, the "
        "one measured fastest in the service (ONNX Runtime). A Keras file runs on Keras.",
    )
    inference_threads: int | None = Field(
        None, ge=1, description="Inference threads per process; default: usable cores / workers."
    )
    inference_threads_per_call: int = Field(
        1,
        ge=1,
        description="Inference threads of one model call: INFERENCE_THREADS / this many calls run at "
        "once. 1 gives the most throughput on CPU; more gives a lone request a faster answer.",
    )

    def mlflow_registry(self) -> MlflowRegistry:
        return MlflowRegistry(
            self.mlflow_tracking_uri, self.mlflow_http_request_max_retries, self.mlflow_http_request_timeout
        )


class LimitSettings(SettingsGroup):
    """What one request may cost: bytes, pixels, pages, seconds; and what a connection may hold."""

    max_upload_bytes: int = Field(10 * MiB, gt=0, description="Largest request body accepted, in bytes.")
    memory_limit_bytes: int = Field(
        default_factory=lambda: cgroup_memory_limit() or REFERENCE_MEMORY_LIMIT_BYTES,
        ge=128 * MiB,
        description="Memory the service may use, shared by its workers; the budgets below are sized from "
        "it. Default: the container's limit (a pod's limits.memory), or 768 MiB without one.",
    )
    body_memory_bytes: int = Field(
        DEFAULT_BODY_MEMORY_BYTES,
        ge=1 * MiB,
        description="Bytes of request bodies being received or held at once; past it, 503 with Retry-After.",
    )
    # Declared after memory_limit_bytes and body_memory_bytes: its default is derived from them.
    decode_memory_bytes: int = Field(
        default_factory=lambda fields: decode_memory_for(
            fields["memory_limit_bytes"],
            fields["body_memory_bytes"],
            fields.get("workers", 1),
            fields.get("inference_runtime", "auto"),
        ),
        ge=32 * MiB,
        description="Bytes of decoded pixels in flight across all decode threads; an image that alone "
        "needs more is refused (413), others wait their turn. Default: what is left of a worker's share "
        "of MEMORY_LIMIT_BYTES after the process (256 MiB; 384 on OpenVINO), 3 x BODY_MEMORY_BYTES and "
        "64 MiB of slack (256 MiB in 768).",
    )
    # Declared after decode_memory_bytes: its default is derived from it.
    max_pixels: int = Field(
        default_factory=lambda fields: max_pixels_for(fields["decode_memory_bytes"]),
        gt=0,
        description="Largest image accepted, in pixels (width x height); default: the most that fits "
        "DECODE_MEMORY_BYTES at 4 bytes per pixel (64,000,000 in 256 MiB).",
    )
    max_files_per_request: int = Field(
        16, gt=0, description="Most files one POST /predict, or images one v2 infer, may carry."
    )
    max_pdf_pages: int = Field(200, gt=0, description="Most pages a PDF may have; past it, 413.")
    max_images_per_document: int = Field(
        64, gt=0, description="Most images one PDF may hold (copies included); past it, 413."
    )
    pdf_time_budget_seconds: float = Field(
        10.0,
        gt=0,
        description="Seconds of work one request's documents may take in all (CPU time reading them and "
        "decoding their images, and their share of model calls); past it, what is left is 422 too_slow.",
    )
    header_timeout_seconds: float = Field(
        10.0, gt=0, description="Longest a client may take to send headers."
    )
    max_header_bytes: int = Field(
        32 * KiB, ge=1 * KiB, description="Most bytes of request line and headers; past it, 431 and close."
    )
    max_header_count: int = Field(100, ge=8, description="Most header lines in a request; past it, 431.")
    max_connections: int = Field(
        512, ge=1, description="Open connections per process; past it, new ones get 503 and are closed."
    )
    body_timeout_seconds: float = Field(30.0, gt=0, description="Longest wait for the next chunk of a body.")
    body_deadline_seconds: float = Field(
        120.0, gt=0, description="Longest a whole request body may take to arrive; past it, 408."
    )

    def memory_limit_source(self) -> str:
        """Where MEMORY_LIMIT_BYTES came from, for the start-up log."""
        if "memory_limit_bytes" in self.model_fields_set:
            return "MEMORY_LIMIT_BYTES"
        if cgroup_memory_limit() is not None:
            return "the container's memory limit"
        return "no container limit: the Deployment's 768 MiB"

    def document_limits(self) -> DocumentLimits:
        return DocumentLimits(
            self.max_pdf_pages, self.max_images_per_document, self.max_pixels, self.pdf_time_budget_seconds
        )


class AdmissionSettings(SettingsGroup):
    """How requests share model calls, and how many may wait for them."""

    batch_max_size: int = Field(4, ge=1, le=256, description="Most images in one model call.")
    batch_max_wait_ms: float = Field(2.0, ge=0, le=1000, description="Longest wait for a batch to fill.")
    queue_max: int = Field(
        128,
        ge=1,
        description="Most prediction requests in progress, whatever the wait; past it, 503. While one "
        "client holds more than its fair share, others may be let in past it (never twice as many).",
    )
    max_queue_wait_ms: float = Field(
        500.0,
        gt=0,
        description="Longest an admitted prediction request should wait for those ahead of it, by the "
        "measured rate of answers; requests that would wait longer get 503 with Retry-After at once.",
    )
    trusted_proxies: Annotated[CommaSeparated, AfterValidator(_networks)] = Field(
        default_factory=list,
        description="Addresses or networks (CIDR) of proxies whose X-Forwarded-For names the client, "
        "comma-separated; empty (the default): the client is the connection's peer address. Used to "
        "share places fairly between clients when auth is off.",
    )


class AuthSettings(SettingsGroup):
    """Who may ask for predictions: the OAuth2 token checks, and the page's sign-in."""

    auth_disabled: bool = Field(False, description="Serve predictions without tokens (local demos only).")
    oauth2_issuer: str | None = Field(
        None, description="The token issuer (`iss`), e.g. https://tenant.auth0.com/"
    )
    oauth2_audience: str | None = Field(
        None, description="This API's identifier, required in the token's `aud`."
    )
    oauth2_required_scope: str = Field("get::prediction", description="Scope a token needs for predictions.")
    oauth2_jwks_uri: str | None = Field(
        None, description="Key set URL, or a path joined to the issuer; default: OpenID discovery."
    )
    oauth2_client_id: str | None = Field(
        None,
        description="The web page's OpenID Connect client: public, Authorization Code with PKCE, the "
        "page's URL as redirect URI; unset: the page cannot sign people in.",
    )
    oauth2_audience_parameter: Literal["audience", "resource", "none"] = Field(
        "audience",
        description="How the page asks the provider for a token for OAUTH2_AUDIENCE: `audience` (Auth0), "
        "`resource` (RFC 8707 resource indicators) or `none` (the provider decides).",
    )
    oauth2_leeway_seconds: float = Field(30.0, ge=0, le=300, description="Clock skew allowed on exp/nbf/iat.")
    oauth2_jwks_cache_seconds: float = Field(3600.0, gt=0, description="Key cache lifetime without max-age.")
    oauth2_jwks_min_refresh_seconds: float = Field(10.0, ge=0, description="Least time between key fetches.")
    oauth2_fetch_timeout_seconds: float = Field(
        5.0, gt=0, description="Timeout of one key or discovery fetch."
    )

    def auth_configuration_error(self) -> str | None:
        """Why predictions cannot be protected as configured, or None (secure by default)."""
        if self.auth_disabled:
            return None
        missing = [
            name
            for name, value in (
                ("OAUTH2_ISSUER", self.oauth2_issuer),
                ("OAUTH2_AUDIENCE", self.oauth2_audience),
            )
            if not value
        ]
        if missing:
            return (
                f"{' and '.join(missing)} not set: predictions need OAuth2 tokens. Set them (see README), "
                "or disable authentication explicitly for a local demo with --no-auth or AUTH_DISABLED=true."
            )
        return None

    @field_validator("oauth2_issuer", "oauth2_jwks_uri")
    @classmethod
    def _https_unless_loopback(cls, value: str | None) -> str | None:
        if value and urlsplit(value).scheme:  # a relative OAUTH2_JWKS_URI is joined to the issuer
            require_https_unless_loopback(value)
        return value


class FeedbackSettings(SettingsGroup):
    """Where people's corrections are kept, and who may send them."""

    feedback_database_url: SecretStr | None = Field(
        None,
        description="Where corrections are stored: sqlite:///path/feedback.db (one machine) or "
        "postgresql://user:password@host/db (replicas share it); unset: POST /feedback is off (404).",
    )
    feedback_required_scope: str = Field(
        "post::feedback", description="Scope a token needs to send feedback (POST /feedback)."
    )
    feedback_accuracy_window: int = Field(
        200, ge=1, description="Feedback answers the live accuracy estimate is computed over (per process)."
    )
    feedback_retention_days: float = Field(
        180,
        ge=0,
        description="Days a label is kept after its last change; then it is deleted, with the image once "
        "nobody's label is left on it (checked every FEEDBACK_PURGE_INTERVAL_SECONDS and by `feedback "
        "purge`). 0: kept until deleted.",
    )
    feedback_purge_interval_seconds: float = Field(
        3600, gt=0, description="How often the service deletes expired feedback (off the request path)."
    )
    feedback_daily_quota: int = Field(
        200,
        ge=0,
        description="Labels one person (token subject; with auth off, client address) may add in 24 hours; "
        "past it, 429. Changing a label they already sent is always allowed. 0: no quota.",
    )
    feedback_max_store_bytes: int = Field(
        1 << 30,
        ge=0,
        description="Size of the feedback store past which new images are refused (507); labels on "
        "stored images still work. 0: no cap.",
    )
    feedback_allow_anonymous: bool = Field(
        False,
        description="With auth off, accept feedback without a token (`make serve` does, for the demo); "
        "all anonymous answers on one image then count as one vote, the latest.",
    )

    def feedback_policy(self) -> FeedbackPolicy:
        from cats_dogs_other.feedback.store import FeedbackPolicy  # SQLAlchemy only where feedback is used

        return FeedbackPolicy(
            retention=timedelta(days=self.feedback_retention_days) if self.feedback_retention_days else None,
            daily_quota=self.feedback_daily_quota or None,
            max_store_bytes=self.feedback_max_store_bytes or None,
        )


class ObservabilitySettings(SettingsGroup):
    """What the service tells operators (tracing is configured by OpenTelemetry's own OTEL_* variables)."""

    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    unsure_below: float = Field(
        0.6,
        gt=0,
        le=1,
        description="An answer whose top value is under this counts as unsure (cdo_predictions_unsure).",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


# By title, in the order `serve --help` lists them.
SETTINGS_GROUPS: dict[str, type[SettingsGroup]] = {
    "server": ServerSettings,
    "model": ModelSettings,
    "limits": LimitSettings,
    "batching and admission": AdmissionSettings,
    "auth": AuthSettings,
    "feedback": FeedbackSettings,
    "observability": ObservabilitySettings,
}


class Settings(
    ObservabilitySettings,
    FeedbackSettings,
    AuthSettings,
    AdmissionSettings,
    LimitSettings,
    ModelSettings,
    ServerSettings,
):
    """Every knob of the service: all the groups in one object, as `create_app` and `serve` take it."""
