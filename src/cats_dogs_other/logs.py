"""JSON-lines logging: one object per line, easy for Loki, CloudWatch or `jq`.

Only what the code puts in a record is written: no request bodies, no headers, so no image bytes and no
tokens can reach the logs by accident.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

# Attributes every LogRecord has; anything else was passed with `extra=` and is written as a field.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName", "color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # pypdf warns about every flaw of a client's document ("EOF marker not found", an object's repr):
    # many lines per hostile file, with its content in them. The client gets the reason in its problem.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    # Alembic names every plugin it loads on each migration check; the service logs the outcome itself.
    logging.getLogger("alembic").setLevel(logging.WARNING)
