"""What one app instance owns: its settings, its model and whether it is ready. Built by `create_app`."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request

from cats_dogs_other.auth.tokens import TokenValidator
from cats_dogs_other.inference.classifier import ImageClassifier
from cats_dogs_other.inference.service import InferenceService
from cats_dogs_other.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    classifier: ImageClassifier | None = None
    inference: InferenceService | None = None
    ready: bool = False
    stopping: bool = False
    model_source: str = field(default="")
    token_validator: TokenValidator | None = None

    def attach(self, classifier: ImageClassifier, source: str) -> None:
        self.classifier = classifier
        self.inference = InferenceService(classifier, self.settings.max_pixels)
        self.model_source = source


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime
