"""The application factory: `create_app(settings)` builds a self-contained app; no module-level state."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import anyio
import httpx
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from opentelemetry import trace

from cats_dogs_other import __version__
from cats_dogs_other.api.middleware import (
    BodyBudget,
    BodyLimitMiddleware,
    CancelOnDisconnectMiddleware,
    RequestContextMiddleware,
)
from cats_dogs_other.api.problems import PROBLEM_MEDIA_TYPE, install_problem_handlers
from cats_dogs_other.api.routes import router
from cats_dogs_other.api.runtime import Runtime
from cats_dogs_other.api.v2 import router as v2_router
from cats_dogs_other.auth import JwksCache, TokenValidator
from cats_dogs_other.cpu import available_cores
from cats_dogs_other.inference.classifier import ImageClassifier
from cats_dogs_other.logs import configure_logging
from cats_dogs_other.memory import configure_malloc
from cats_dogs_other.models.source import ModelSource, resolve_model
from cats_dogs_other.observability.tracing import tracing_from_environment
from cats_dogs_other.settings import Settings

log = logging.getLogger(__name__)

DESCRIPTION = """
Says whether an image shows a **cat**, a **dog** or **something else**.

`POST /upload` with one multipart part `file` answers
`{"prediction": "Cat", "values": [p_cat, p_dog, p_other]}`; `POST /predict` takes several parts
named `files`. Errors are RFC 9457 `application/problem+json`.
"""

TAGS = [
    {"name": "inference", "description": "Classify images."},
    {"name": "health", "description": "Probes and version information for operators and load balancers."},
]


def load_classifier(settings: Settings) -> tuple[ImageClassifier, ModelSource]:
    """The configured model (a path, a registry URI, or the built-in one) and where it came from."""
    source = resolve_model(settings.model_uri, settings.model_cache_dir)
    threads = settings.inference_threads or max(1, available_cores() // settings.workers)
    classifier = ImageClassifier.load(
        source.path, card=source.card, max_pixels=settings.max_pixels, threads=threads
    )
    return classifier, source


def build_token_validator(settings: Settings, client: httpx.AsyncClient) -> TokenValidator | None:
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


def create_app_from_env() -> FastAPI:
    """For `uvicorn --factory` and multi-worker serving: every worker builds its app from the environment."""
    settings = Settings()
    configure_logging(settings.log_level)  # a spawned worker starts with Python's default logging
    configure_malloc()
    return create_app(settings)


def create_app(
    settings: Settings | None = None,
    classifier: ImageClassifier | None = None,
    source: ModelSource | None = None,
    tracer: trace.Tracer | None = None,
) -> FastAPI:
    """Build the app. Pass an already loaded `classifier` (and its `source`) to share one between apps."""
    settings = settings or Settings()
    provider = None
    if tracer is None:
        tracer, provider = tracing_from_environment()
    runtime = Runtime(settings=settings, tracer=tracer)
    http_client = httpx.AsyncClient(
        timeout=settings.oauth2_fetch_timeout_seconds,
        follow_redirects=False,  # JwksCache follows redirects itself, on the same host only
        headers={"User-Agent": "cats-dogs-other"},
    )
    runtime.token_validator = build_token_validator(settings, http_client)
    if classifier is not None:
        runtime.attach(
            classifier,
            source or ModelSource(settings.model_uri or "builtin:default", classifier.model_path, "onnx"),
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if runtime.classifier is None:
            # A bad model fails start-up here, with the loader's message, rather than the first request.
            loaded, source = await anyio.to_thread.run_sync(load_classifier, settings)
            runtime.attach(loaded, source)
        if settings.auth_disabled:
            log.warning("AUTHENTICATION IS DISABLED: anyone who can reach this service can use it")
        elif runtime.token_validator is None:
            log.error("predictions are refused: %s", settings.auth_configuration_error())
        else:
            log.info(
                "predictions need tokens from %s with scope %s",
                settings.oauth2_issuer,
                settings.oauth2_required_scope,
            )
        assert runtime.inference is not None
        runtime.inference.start()
        warm_up = asyncio.create_task(_warm_up(runtime))
        log.info(
            "model %s loaded from %s",
            runtime.classifier.name if runtime.classifier else "?",
            runtime.model_source.describe() if runtime.model_source else "?",
        )
        try:
            yield
        finally:
            runtime.stopping = True
            runtime.ready = False
            warm_up.cancel()
            with suppress(asyncio.CancelledError):
                await warm_up
            await runtime.inference.stop()
            if runtime.token_validator is not None:
                await runtime.token_validator.keys.close()
            await http_client.aclose()
            if provider is not None:
                await anyio.to_thread.run_sync(provider.shutdown)  # export what is still buffered

    app = FastAPI(
        title="cats-dogs-other",
        version=__version__,
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
        form_limits={"max_files": settings.max_files_per_request, "max_fields": 16},
    )
    app.state.runtime = runtime
    app.openapi = lambda: _openapi_document(app, settings)  # type: ignore[method-assign]
    app.include_router(router)
    app.include_router(v2_router)
    install_problem_handlers(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    body_budget = BodyBudget(settings.body_memory_bytes)
    runtime.metrics.body_memory.set_function(lambda: body_budget.in_use)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_upload_bytes,
        chunk_timeout_seconds=settings.body_timeout_seconds,
        deadline_seconds=settings.body_deadline_seconds,
        budget=body_budget,
    )
    app.add_middleware(CancelOnDisconnectMiddleware)
    app.add_middleware(
        RequestContextMiddleware, metrics=runtime.metrics, tracer=runtime.tracer
    )  # outermost: ids, logs, metrics
    return app


def _openapi_document(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """FastAPI's document, with two fixes: error bodies are application/problem+json (FastAPI says
    application/json), and with auth disabled no operation claims to need a token."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
            tags=app.openapi_tags,
        )
        problem_ref = {"$ref": "#/components/schemas/ProblemDetails"}
        for operation in (op for path in schema["paths"].values() for op in path.values()):
            for response in operation.get("responses", {}).values():
                content = response.get("content", {})
                if content.get("application/json", {}).get("schema") == problem_ref:
                    response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": problem_ref}}
            if settings.auth_disabled:
                operation.pop("security", None)
                for status in ("401", "403"):
                    operation.get("responses", {}).pop(status, None)
        if settings.auth_disabled:
            schema.get("components", {}).pop("securitySchemes", None)
        app.openapi_schema = schema
    return app.openapi_schema


async def _warm_up(runtime: Runtime) -> None:
    assert runtime.classifier is not None
    await anyio.to_thread.run_sync(runtime.classifier.warm_up, runtime.settings.batch_max_size)
    runtime.ready = True
    log.info("model warmed up; ready")
