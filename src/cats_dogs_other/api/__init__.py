"""The HTTP API: app factory, routes, error handlers.

`create_app` is imported on first use, so importing any one module of this package (or of `auth`)
does not build the whole app's import graph first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cats_dogs_other.api.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from cats_dogs_other.api.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
