"""cats-dogs-other: an image classifier (cat, dog or other) behind a secure, fast HTTP API."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cats-dogs-other")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
