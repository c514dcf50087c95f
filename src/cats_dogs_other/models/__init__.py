"""Model files and their model cards."""

from cats_dogs_other.models.card import ModelCard, Preprocessing, default_model_path

__all__ = ["ModelCard", "Preprocessing", "default_model_path"]
