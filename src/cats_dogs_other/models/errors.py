"""The one error for a model that cannot be served."""


class ModelLoadError(RuntimeError):
    """The model cannot be served; the message says what to fix. Raised at start, never per request."""
