"""`serve` following a registry alias (`MODEL_URI=models:/NAME@ALIAS`, `MODEL_REFRESH_SECONDS`).

Every interval (with 10% jitter, so replicas do not ask the registry in step) one small registry
request asks where the alias points. When it moved, the new version is downloaded, loaded and warmed
in a worker thread beside the one being served; then the served model is replaced between two
requests (one assignment on the event loop), and the old engine is stopped once the requests that took
it have finished. A version that fails to download, load or warm is logged and counted, and the old
one keeps serving; the next interval tries again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Callable

import anyio

from cats_dogs_other.api.state import ServedModel, ServiceState
from cats_dogs_other.inference.classifier import ImageClassifier
from cats_dogs_other.models.errors import ModelLoadError
from cats_dogs_other.models.source import ModelSource, alias_target, pinned

log = logging.getLogger(__name__)

JITTER = 0.1
IDLE_POLL_SECONDS = 0.05
# A request keeps the engine it was admitted to until it is answered; past this, the old engine is
# stopped anyway (a request still on it gets a 503-like error rather than a leaked engine).
RETIRE_AFTER_SECONDS = 300.0

Loader = Callable[[str], tuple[ImageClassifier, ModelSource]]


def follows_alias(uri: str | None, refresh_seconds: float) -> bool:
    return bool(uri) and str(uri).startswith("models:/") and "@" in str(uri) and refresh_seconds > 0


class AliasFollower:
    """Keeps `state.model` on the version `alias_uri` points to."""

    def __init__(self, state: ServiceState, alias_uri: str, interval_seconds: float, load: Loader) -> None:
        self.state = state
        self.alias_uri = alias_uri
        self.interval = interval_seconds
        self.load = load  # a pinned models:/NAME/VERSION -> (classifier, source), in a worker thread
        self.failed_version: str | None = None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval * random.uniform(1 - JITTER, 1 + JITTER))
            try:
                await self.check()
            except Exception:  # our bug: in the log with its traceback, and the next look still happens
                log.exception("following %s failed; the served model is unchanged", self.alias_uri)

    async def check(self) -> bool:
        """Look once; switch when the alias moved. True when a new version is now served."""
        served = self.state.model
        if served is None:
            return False
        registry = self.state.settings.mlflow_registry()
        try:
            version = await anyio.to_thread.run_sync(alias_target, self.alias_uri, registry)
        except ModelLoadError as exc:
            log.warning(
                "could not look up %s (still serving version %s): %s",
                self.alias_uri,
                served.source.details.get("version"),
                exc,
            )
            self.state.metrics.model_refreshes.labels("lookup_failed").inc()
            return False
        if version == served.source.details.get("version"):
            return False
        log.info(
            "%s moved to version %s: loading it beside version %s",
            self.alias_uri,
            version,
            served.source.details.get("version"),
        )
        started = time.perf_counter()
        try:
            classifier, source = await anyio.to_thread.run_sync(self.load, pinned(self.alias_uri, version))
            await anyio.to_thread.run_sync(classifier.warm_up, self.state.settings.batch_max_size)
        except ModelLoadError as exc:  # the loader's own words: what is wrong with that version
            self._failed(version, exc)
            return False
        except Exception as exc:  # a runtime's own error on a broken file, or our bug: keep serving,
            self._failed(version, exc, with_traceback=True)  # and log the traceback
            return False
        source = dataclasses.replace(source, uri=self.alias_uri)  # /version names what is followed
        await self.switch(classifier, source)
        self.failed_version = None
        log.info(
            "now serving %s (loaded and warmed in %.1f s)",
            self.state.model and self.state.model.describe(),
            time.perf_counter() - started,
        )
        return True

    async def switch(self, classifier: ImageClassifier, source: ModelSource) -> None:
        """Serve `classifier` from the next request on; stop the old engine once it is idle."""
        state = self.state
        old = state.model
        new = ServedModel.build(classifier, source, state.settings, state.metrics, state.tracer)
        new.engine.start()
        state.model = new
        state.metrics.model_refreshes.labels("switched").inc()
        if old is None:
            return
        old.retire(state.metrics, new)
        deadline = time.monotonic() + RETIRE_AFTER_SECONDS
        while old.engine.in_use and time.monotonic() < deadline:
            await asyncio.sleep(IDLE_POLL_SECONDS)
        await old.engine.stop()

    def _failed(self, version: str, exc: BaseException, *, with_traceback: bool = False) -> None:
        self.state.metrics.model_refreshes.labels("load_failed").inc()
        current = self.state.model.source.details.get("version") if self.state.model else None
        if version != self.failed_version:  # once per version, not every interval
            log.error(
                "version %s of %s cannot be served (still serving version %s): %s",
                version,
                self.alias_uri,
                current,
                exc,
                exc_info=exc if with_traceback else None,
            )
        self.failed_version = version
