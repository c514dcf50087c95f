"""People's corrections of the model's answers, stored as training data for the next model."""

from cats_dogs_other.feedback.export import ExportReport, export_dataset
from cats_dogs_other.feedback.store import (
    FeedbackPolicy,
    FeedbackQuotaError,
    FeedbackRecord,
    FeedbackStore,
    FeedbackStoreFullError,
    FeedbackUnavailableError,
    Removed,
    Stored,
)

__all__ = [
    "ExportReport",
    "FeedbackPolicy",
    "FeedbackQuotaError",
    "FeedbackRecord",
    "FeedbackStore",
    "FeedbackStoreFullError",
    "FeedbackUnavailableError",
    "Removed",
    "Stored",
    "export_dataset",
]
