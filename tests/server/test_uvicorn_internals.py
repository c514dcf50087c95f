"""What `LimitedHttpProtocol` (server/protocol.py) takes from Uvicorn's private `HttpToolsProtocol`, checked
by name: when a Uvicorn release moves one, this fails and says which, rather than a server that
misbehaves under load. pyproject.toml pins Uvicorn to the releases this passes on."""

from __future__ import annotations

import asyncio
from unittest.mock import MagicMock

import uvicorn
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from cats_dogs_other.server.protocol import LimitedHttpProtocol

# Methods the protocol overrides (and calls through super()) or calls.
METHODS = (
    "connection_made",
    "connection_lost",
    "data_received",
    "on_message_begin",
    "on_header",
    "on_headers_complete",
    "on_body",
    "on_message_complete",
    "on_response_complete",
    "send_400_response",
    "handle_websocket_upgrade",
    "_should_upgrade",
    "_unsupported_upgrade_warning",
    "_unset_keepalive_if_required",
)
# State of a connection it reads, once the connection is made and a request has begun.
ATTRIBUTES = (
    "transport",
    "parser",
    "flow",
    "client",
    "loop",
    "logger",
    "cycle",
    "pipeline",
    "connections",
    "server_state",
    "app_state",
    "url",
    "headers",
    "scope",
    "expect_100_continue",
)


def _hint(what: list[str]) -> str:
    return (
        f"uvicorn {uvicorn.__version__}'s HttpToolsProtocol has no {what}, which LimitedHttpProtocol "
        "(server/protocol.py) relies on: keep uvicorn below this release in pyproject.toml, or adapt "
        "the protocol"
    )


def test_the_methods_the_protocol_overrides_or_calls_exist() -> None:
    missing = [name for name in METHODS if not callable(getattr(HttpToolsProtocol, name, None))]
    assert not missing, _hint(missing)
    assert issubclass(LimitedHttpProtocol, HttpToolsProtocol)


def test_the_connection_state_the_protocol_reads_exists() -> None:
    async def app(scope: object, receive: object, send: object) -> None:  # never called
        raise AssertionError

    config = uvicorn.Config(app, http="httptools", log_config=None)
    config.load()
    loop = asyncio.new_event_loop()
    try:
        protocol = HttpToolsProtocol(config, ServerState(), app_state={}, _loop=loop)
        transport = MagicMock()
        transport.get_extra_info.side_effect = lambda name, default=None: {
            "peername": ("127.0.0.1", 5000),
            "sockname": ("127.0.0.1", 8080),
        }.get(name, default)
        protocol.connection_made(transport)
        protocol.on_message_begin()
        missing = [name for name in ATTRIBUTES if not hasattr(protocol, name)]
        assert not missing, _hint(missing)
        assert protocol.client == ("127.0.0.1", 5000)
        assert isinstance(protocol.flow, FlowControl)
        flow_missing = [
            n for n in ("pause_reading", "resume_reading", "write_paused") if not hasattr(protocol.flow, n)
        ]
        assert not flow_missing, _hint([f"flow.{n}" for n in flow_missing])
        assert hasattr(protocol.server_state, "default_headers"), _hint(["server_state.default_headers"])
        assert "response_complete" in RequestResponseCycle.__init__.__code__.co_names, _hint(
            ["RequestResponseCycle.response_complete"]
        )
    finally:
        loop.close()
