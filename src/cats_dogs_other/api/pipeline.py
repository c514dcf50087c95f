"""One prediction path for every way in.

A protocol adapter turns its request into the files it sent (`read`), the engine classifies them
(`InferenceService.classify_files`: documents read and expanded, images decoded, batched, classified,
each answer put back in its place), and the adapter renders the outcomes as its answer (`answer`).
Before `read`, the route's dependencies have checked the token and admitted the request
(`api/dependencies.py`); errors are raised, never answered here, and become problems in one place
(`problems.problem_for`). A new way in is one more adapter, not one more copy.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar, Generic, TypeVar

from fastapi import Request

from cats_dogs_other.inference.files import FileOutcome, SentFile
from cats_dogs_other.inference.service import InferenceService
from cats_dogs_other.settings import Settings

Context = TypeVar("Context")
Answer = TypeVar("Answer")


class PredictionProtocol(ABC, Generic[Context, Answer]):
    """A way in: like a LitServe spec's `decode_request`/`encode_response`, without the model in it.

    `read` returns the files and whatever the answer needs of the request (the outputs a v2 client
    asked for); `answer` gets one outcome per file, in order. With `documents`, PDFs are read and their
    images classified; without, every file is an image. With `fail_fast`, the first bad image is the
    answer (an error) and the others stop; without it, each image gets its own outcome.
    """

    fail_fast: ClassVar[bool] = False
    documents: ClassVar[bool] = False

    @abstractmethod
    async def read(self, request: Request, settings: Settings) -> tuple[Sequence[SentFile], Context]: ...

    @abstractmethod
    def answer(self, context: Context, outcomes: list[FileOutcome]) -> Answer: ...


async def run_prediction(
    protocol: PredictionProtocol[Context, Answer],
    request: Request,
    engine: InferenceService,
    settings: Settings,
    *,
    thumbnails: bool = False,
) -> Answer:
    files, context = await protocol.read(request, settings)
    outcomes = await engine.classify_files(
        files,
        engine.request_budget(),  # what this request may spend, whatever it sent
        documents=protocol.documents,
        fail_fast=protocol.fail_fast,
        thumbnails=thumbnails,
    )
    return protocol.answer(context, outcomes)
