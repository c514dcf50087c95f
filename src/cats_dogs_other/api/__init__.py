"""The HTTP API: app factory, routes, error handlers."""

from cats_dogs_other.api.app import create_app

__all__ = ["create_app"]
