"""The application factory: `create_app(settings)` builds a self-contained app; no module-level state."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import anyio
import httpx
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

from cats_dogs_other import __version__
from cats_dogs_other.api import v2
from cats_dogs_other.api.dependencies import admitted_routes
from cats_dogs_other.api.feedback import router as feedback_router
from cats_dogs_other.api.following import AliasFollower, follows_alias
from cats_dogs_other.api.handoff import TRANSPORT_STATE_KEY, TransportState
from cats_dogs_other.api.middleware import (
    BodyBudget,
    BodyLimitMiddleware,
    CancelOnDisconnectMiddleware,
    RequestContextMiddleware,
)
from cats_dogs_other.api.openapi import DESCRIPTION, TAGS, openapi_document
from cats_dogs_other.api.problems import install_problem_handlers
from cats_dogs_other.api.routes import router
from cats_dogs_other.api.state import Phase, ServedModel, ServiceState
from cats_dogs_other.auth import JwksCache, TokenValidator
from cats_dogs_other.cpu import available_cores
from cats_dogs_other.feedback import FeedbackStore, FeedbackUnavailableError
from cats_dogs_other.inference.classifier import ImageClassifier
from cats_dogs_other.logs import configure_logging
from cats_dogs_other.memory import configure_malloc
from cats_dogs_other.models.source import ModelSource, resolve_model
from cats_dogs_other.observability.metrics import ServiceMetrics
from cats_dogs_other.observability.tracing import tracing_from_environment
from cats_dogs_other.settings import AuthSettings, FeedbackSettings, Settings
from cats_dogs_other.web import install_docs, install_page

log = logging.getLogger(__name__)


def load_classifier(settings: Settings, uri: str | None = None) -> tuple[ImageClassifier, ModelSource]:
    """The configured model (a path, a registry URI, or the built-in one), or the one at `uri`, and
    where it came from."""
    source = resolve_model(uri or settings.model_uri, settings.model_cache_dir, settings.mlflow_registry())
    threads = settings.inference_threads or max(1, available_cores() // settings.workers)
    classifier = ImageClassifier.load(
        source.path,
        card=source.card,
        max_pixels=settings.max_pixels,
        threads=threads,
        threads_per_call=settings.inference_threads_per_call,
        runtime=settings.inference_runtime,
    )
    return classifier, source


def build_token_validator(settings: AuthSettings, client: httpx.AsyncClient) -> TokenValidator | None:
    """The token checks, or None when auth is disabled or not configured (then predictions are refused)."""
    if settings.auth_disabled or settings.auth_configuration_error():
        return None
    assert settings.oauth2_issuer is not None
    assert settings.oauth2_audience is not None
    keys = JwksCache(
        settings.oauth2_issuer,
        settings.oauth2_jwks_uri,
        client,
        default_ttl=settings.oauth2_jwks_cache_seconds,
        min_refresh_interval=settings.oauth2_jwks_min_refresh_seconds,
        fetch_deadline=settings.oauth2_fetch_timeout_seconds,
    )
    return TokenValidator(
        keys=keys,
        issuer=settings.oauth2_issuer,
        audience=settings.oauth2_audience,
        required_scope=settings.oauth2_required_scope,
        leeway_seconds=settings.oauth2_leeway_seconds,
    )


def build_feedback_store(settings: FeedbackSettings) -> FeedbackStore | None:
    """The feedback database when FEEDBACK_DATABASE_URL is set; its schema is migrated after start-up."""
    if settings.feedback_database_url is None:
        return None
    return FeedbackStore(settings.feedback_database_url.get_secret_value(), settings.feedback_policy())


def worker_app(settings: Settings) -> FastAPI:
    """The app of one `--workers N` process, from the settings `serve` was given (pickled, not via the
    environment); a spawned worker starts with Python's default logging and malloc settings."""
    configure_logging(settings.log_level)
    configure_malloc()
    return create_app(settings, freeze_heap=True)


def create_app(
    settings: Settings | None = None,
    classifier: ImageClassifier | None = None,
    source: ModelSource | None = None,
    tracer: trace.Tracer | None = None,
    *,
    freeze_heap: bool = False,
) -> FastAPI:
    """Build the app. Pass an already loaded `classifier` (and its `source`) to share one between apps.
    `freeze_heap` (what `serve` does, once per process): after warm-up, `gc.freeze()` what exists."""
    settings = settings or Settings()
    provider = None
    if tracer is None:
        tracer, provider = tracing_from_environment()
    http_client = httpx.AsyncClient(
        timeout=settings.oauth2_fetch_timeout_seconds,
        follow_redirects=False,  # JwksCache follows redirects itself, on the same host only
        headers={"User-Agent": "cats-dogs-other"},
    )
    state = ServiceState(
        settings,
        build_token_validator(settings, http_client),
        metrics=ServiceMetrics(settings.feedback_accuracy_window),
        tracer=tracer,
        feedback=build_feedback_store(settings),
    )
    if classifier is not None:
        source = source or ModelSource(settings.model_uri or "builtin:default", classifier.model_path, "onnx")
        state.model = ServedModel.build(classifier, source, settings, state.metrics, tracer)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        if state.model is None:
            # A bad model fails start-up here, with the loader's message, rather than the first request.
            loaded, loaded_from = await anyio.to_thread.run_sync(load_classifier, settings)
            state.model = ServedModel.build(loaded, loaded_from, settings, state.metrics, state.tracer)
        model = state.model
        _log_auth_mode(settings, state.token_validator)
        _log_memory_budget(settings, state.metrics)
        model.engine.start()
        warm_up = asyncio.create_task(_warm_up(state, model, freeze_heap))
        background = [warm_up]
        log.info("model %s", model.describe())
        if state.feedback is not None:
            background.append(asyncio.create_task(_prepare_feedback(state.feedback)))
            if settings.feedback_max_store_bytes:
                state.metrics.feedback_store_max_bytes.set(settings.feedback_max_store_bytes)
            interval = settings.feedback_purge_interval_seconds
            background.append(asyncio.create_task(_purge_feedback(state.feedback, state.metrics, interval)))
        if follows_alias(settings.model_uri, settings.model_refresh_seconds):
            assert settings.model_uri is not None
            for outcome in ("switched", "load_failed", "lookup_failed"):
                state.metrics.model_refreshes.labels(outcome)
            follower = AliasFollower(
                state,
                settings.model_uri,
                settings.model_refresh_seconds,
                functools.partial(load_classifier, settings),
            )
            background.append(asyncio.create_task(follower.run()))
            log.info("following %s: looking every %g s", settings.model_uri, settings.model_refresh_seconds)
        try:
            # Lifespan state: Uvicorn hands it to its protocols (the `server` package, api/handoff.py).
            routes = admitted_routes([router, feedback_router, v2.router])
            yield {TRANSPORT_STATE_KEY: TransportState(state, routes)}
        finally:
            state.advance(Phase.STOPPING)
            for task in background:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
            if state.model is not None:
                await state.model.engine.stop()  # the one served now: an alias may have moved it
            if state.feedback is not None:
                await anyio.to_thread.run_sync(state.feedback.close)
            if state.token_validator is not None:
                await state.token_validator.keys.close()
            await http_client.aclose()
            if provider is not None:
                await anyio.to_thread.run_sync(provider.shutdown)  # export what is still buffered

    app = FastAPI(
        title="cats-dogs-other",
        version=__version__,
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
        docs_url=None,  # Swagger UI and ReDoc from the package's own files (web/docs.py), not a CDN
        redoc_url=None,
    )
    app.state.service = state
    app.openapi = lambda: openapi_document(app, settings)  # type: ignore[method-assign]
    app.include_router(router)
    app.include_router(feedback_router)
    v2.install(app)
    install_page(app, settings)
    install_docs(app)
    install_problem_handlers(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],  # DELETE: people withdrawing or erasing feedback
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    body_budget = BodyBudget(settings.body_memory_bytes)
    state.metrics.body_memory.set_function(lambda: body_budget.in_use)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_upload_bytes,
        chunk_timeout_seconds=settings.body_timeout_seconds,
        deadline_seconds=settings.body_deadline_seconds,
        budget=body_budget,
    )
    app.add_middleware(CancelOnDisconnectMiddleware)
    app.add_middleware(RequestContextMiddleware, metrics=state.metrics)  # ids, logs, metrics
    if not isinstance(tracer, trace.NoOpTracer):  # outermost, and only when tracing: it costs per request
        # The server span, joined to the caller's trace by `traceparent`; no span per body chunk.
        app.add_middleware(
            OpenTelemetryMiddleware,
            tracer=tracer,
            exclude_spans=["receive", "send"],
            server_request_hook=_without_query,
        )
    return app


# The ASGI instrumentation records the whole URL; a query string may carry a token a client sent by
# mistake (`?access_token=`), and spans are kept like logs: only the path goes in.


def _without_query(span: trace.Span, scope: dict[str, Any]) -> None:
    if span.is_recording():
        path = scope.get("path", "")
        span.set_attributes({"http.url": path, "http.target": path, "url.full": path, "url.query": ""})


def _log_auth_mode(settings: Settings, validator: TokenValidator | None) -> None:
    if settings.auth_disabled:
        log.warning("AUTHENTICATION IS DISABLED: anyone who can reach this service can use it")
    elif validator is None:
        log.error("predictions are refused: %s", settings.auth_configuration_error())
    else:
        log.info(
            "predictions need tokens from %s with scope %s",
            settings.oauth2_issuer,
            settings.oauth2_required_scope,
        )


def _log_memory_budget(settings: Settings, metrics: ServiceMetrics) -> None:
    metrics.memory_limit.set(settings.memory_limit_bytes)
    metrics.decode_memory_budget.set(settings.decode_memory_bytes)
    log.info(
        "memory: %d MiB (%s) for %d worker(s); decodes %d MiB at once, images up to %s pixels",
        settings.memory_limit_bytes >> 20,
        settings.memory_limit_source(),
        settings.workers,
        settings.decode_memory_bytes >> 20,
        f"{settings.max_pixels:,}",
    )


async def _purge_feedback(store: FeedbackStore, metrics: ServiceMetrics, interval_seconds: float) -> None:
    """Delete expired feedback now and every `interval_seconds`, in a worker thread, never on the request
    path; every replica does it (a purge is idempotent). A database that is down is tried next time."""
    while True:
        try:
            removed = await store.run(store.purge)
            size = await store.run(store.size_bytes)
        except FeedbackUnavailableError as exc:
            log.warning("feedback purge skipped: %s", exc)
        else:
            metrics.feedback_purged.labels("expired_labels").inc(removed.labels)
            metrics.feedback_purged.labels("images").inc(removed.images)
            metrics.feedback_store_bytes.set(size)
            if removed.labels or removed.images:
                log.info("feedback purged: %d labels, %d images", removed.labels, removed.images)
        await asyncio.sleep(interval_seconds)


async def _prepare_feedback(store: FeedbackStore) -> None:
    """Migrate the feedback schema in the background: readiness and predictions never wait for the
    database. If it is down now, the first POST /feedback tries again (and answers 503 meanwhile)."""
    try:
        await store.run(store.migrate)
        log.info("feedback stored in %s", store.describe())
    except FeedbackUnavailableError as exc:
        log.warning("feedback database not ready: %s POST /feedback answers 503 until it is.", exc)


async def _warm_up(state: ServiceState, model: ServedModel, freeze_heap: bool) -> None:
    await anyio.to_thread.run_sync(model.classifier.warm_up, state.settings.batch_max_size)
    if freeze_heap:
        # Everything alive now (modules, the app, the model) lives as long as the process: moved out of
        # the cyclic collector's reach, a full collection walks only what requests create. It paused
        # the event loop ten times shorter (BENCHMARKS.md, *Where the time goes*).
        gc.collect()
        gc.freeze()
    state.advance(Phase.READY)
    log.info("model warmed up; ready")
