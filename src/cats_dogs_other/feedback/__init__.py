"""People's corrections of the model's answers, stored as training data for the next model."""

from cats_dogs_other.feedback.export import ExportReport, export_dataset
from cats_dogs_other.feedback.store import (
    FeedbackRecord,
    FeedbackStore,
    FeedbackUnavailableError,
    Stored,
)

__all__ = [
    "ExportReport",
    "FeedbackRecord",
    "FeedbackStore",
    "FeedbackUnavailableError",
    "Stored",
    "export_dataset",
]
