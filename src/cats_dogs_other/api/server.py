"""Uvicorn, with the two things a service behind a load balancer needs that it lacks out of the box.

- Draining: on SIGTERM `/ready` turns 503 first while requests are still served, for
  `shutdown_drain_seconds`, so load balancers and Kubernetes stop sending traffic; only then does Uvicorn's
  own graceful shutdown run (stop accepting, let in-flight requests finish within
  `shutdown_grace_seconds`, run the lifespan shutdown).
- A header timeout: Uvicorn waits forever for the headers of a request, so a client that opens
  connections and dribbles bytes (slowloris) could pin them; here a request whose headers are not complete
  within `header_timeout_seconds` gets its connection closed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from types import FrameType

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from cats_dogs_other.api.runtime import Runtime

log = logging.getLogger(__name__)


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """Closes connections whose request headers take longer than `timeout_seconds` to arrive.

    A class attribute read from HEADER_TIMEOUT_SECONDS at import, so that worker processes, which import
    it by name (`cats_dogs_other.api.server:HeaderTimeoutProtocol`), get the same value.
    """

    timeout_seconds = float(os.environ.get("HEADER_TIMEOUT_SECONDS", "10"))
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.timeout_seconds, self._expire)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expire(self) -> None:
        log.info("closing a connection whose request headers took over %s s", self.timeout_seconds)
        self.transport.close()


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, runtime: Runtime, drain_seconds: float) -> None:
        super().__init__(config)
        self.runtime = runtime
        self.drain_seconds = drain_seconds
        self._draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining or self.drain_seconds <= 0:  # a second signal, or no drain: stop now
            super().handle_exit(sig, frame)
            return
        self._draining = True
        self.runtime.draining = True
        log.info(
            "signal %s: /ready answers 503; still serving for %s s before shutting down",
            sig,
            self.drain_seconds,
        )
        timer = threading.Timer(self.drain_seconds, super().handle_exit, (sig, frame))
        timer.daemon = True
        timer.start()
