"""The front door: Uvicorn, with what a service facing the internet needs and Uvicorn lacks.

`protocol.py` (`LimitedHttpProtocol`): header, connection and header-time limits, `GET /health`
answered without the app, and each prediction request authenticated and admitted (`shedding.py`,
`LoadShedder`) as soon as its headers are parsed, refusals paced. `draining.py` (`DrainingServer`):
SIGTERM drains before Uvicorn shuts down. What this package and the app hand each other is declared in
`api/handoff.py`. Above `api` in the layers: the app never imports the transport.
"""

from cats_dogs_other.server.draining import DrainingServer
from cats_dogs_other.server.protocol import LimitedHttpProtocol, ProtocolLimits

__all__ = ["DrainingServer", "LimitedHttpProtocol", "ProtocolLimits"]
