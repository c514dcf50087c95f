"""Draining: on SIGTERM `/ready` turns 503 first while requests are still served, for
`shutdown_drain_seconds`, so load balancers and Kubernetes stop sending traffic; only then does Uvicorn's
own graceful shutdown run (stop accepting, let in-flight requests finish within
`shutdown_grace_seconds`, run the lifespan shutdown)."""

from __future__ import annotations

import logging
import threading
from types import FrameType

import uvicorn

from cats_dogs_other.api.state import Phase, ServiceState

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, state: ServiceState, drain_seconds: float) -> None:
        super().__init__(config)
        self.state = state
        self.drain_seconds = drain_seconds
        self._draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining or self.drain_seconds <= 0:  # a second signal, or no drain: stop now
            super().handle_exit(sig, frame)
            return
        self._draining = True
        self.state.advance(Phase.DRAINING)
        log.info(
            "signal %s: /ready answers 503; still serving for %s s before shutting down",
            sig,
            self.drain_seconds,
        )
        timer = threading.Timer(self.drain_seconds, super().handle_exit, (sig, frame))
        timer.daemon = True
        timer.start()
