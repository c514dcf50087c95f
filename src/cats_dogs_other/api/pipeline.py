"""One prediction path for every way in.

A protocol adapter turns its request into encoded images (`read`), the engine classifies them
(`InferenceService.classify`: decode, batch, model), and the adapter turns the outcomes into its answer
(`answer`). Before `read`, the route's dependencies have checked the token and admitted the request
(`api/dependencies.py`); errors are raised, never answered here, and become problems in one place
(`problems.problem_for`). A new way in (a document, feedback) is one more adapter, not one more copy.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar, Generic, TypeVar

from fastapi import Request

from cats_dogs_other.inference.budget import RequestBudget
from cats_dogs_other.inference.service import ImageItem, InferenceService, Outcome
from cats_dogs_other.settings import Settings

Context = TypeVar("Context")
Answer = TypeVar("Answer")


class PredictionProtocol(ABC, Generic[Context, Answer]):
    """A way in: like a LitServe spec's `decode_request`/`encode_response`, without the model in it.

    `read` returns the images and whatever the answer needs of the request (its file names, the
    outputs a v2 client asked for); a document's images are read with the engine (`read_document`).
    `read` and the engine share the request's one `RequestBudget`, made here, once per request.
    With `fail_fast`, the first bad image is the answer (an error) and the others stop; without it,
    each image gets its own outcome.
    """

    fail_fast: ClassVar[bool] = False

    @abstractmethod
    async def read(
        self, request: Request, settings: Settings, engine: InferenceService, budget: RequestBudget
    ) -> tuple[Sequence[ImageItem], Context]: ...

    @abstractmethod
    def answer(self, context: Context, outcomes: list[Outcome]) -> Answer: ...


async def run_prediction(
    protocol: PredictionProtocol[Context, Answer],
    request: Request,
    engine: InferenceService,
    settings: Settings,
    *,
    thumbnails: bool = False,
) -> Answer:
    budget = engine.request_budget()
    images, context = await protocol.read(request, settings, engine, budget)
    outcomes = await engine.classify(images, budget, fail_fast=protocol.fail_fast, thumbnails=thumbnails)
    return protocol.answer(context, outcomes)
