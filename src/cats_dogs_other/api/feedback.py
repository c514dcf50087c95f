"""`POST /feedback`: a person says which label an image really has; the image and label are stored as
training data for the next model (`cats-dogs-other feedback export`).

The request is read like a prediction's (same token rules with their own scope, the same admission,
body limits, decoding and errors) and the image is decoded the same way, so nothing stored here could
not have been classified. The database work runs in worker threads; an unreachable database is a 503
for this route only. What is kept is bounded by the store's policy (retention, a daily quota per
sender, a size cap; `feedback/store.py`); with auth off, anonymous feedback is taken only when the
operator allows it (FEEDBACK_ALLOW_ANONYMOUS).
"""

from __future__ import annotations

import hashlib
import re
from contextlib import suppress
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response

from cats_dogs_other.api.clients import client_key
from cats_dogs_other.api.dependencies import FeedbackEngine, FeedbackSubject, State, client_address
from cats_dogs_other.api.multipart import read_form
from cats_dogs_other.api.openapi import problem_responses
from cats_dogs_other.api.schemas import FeedbackErased, FeedbackStored
from cats_dogs_other.feedback import (
    FeedbackQuotaError,
    FeedbackRecord,
    FeedbackStore,
    FeedbackStoreFullError,
    FeedbackUnavailableError,
)
from cats_dogs_other.inference.budget import RequestBudget
from cats_dogs_other.inference.decode import SUPPORTED_FORMATS_TEXT
from cats_dogs_other.inference.documents import is_pdf
from cats_dogs_other.inference.service import ImageData, InferenceService

SHA256_HEX = re.compile(r"[0-9a-f]{64}")
TEXT_FIELDS = ("label", "predicted", "model_sha256", "page", "index")


def feedback_store(state: State) -> FeedbackStore:
    """The store, or 404 when this service keeps no feedback (before the token check: nothing to guard)."""
    if state.feedback is None:
        raise HTTPException(
            404, "Feedback is off on this service: it is kept only when FEEDBACK_DATABASE_URL is set."
        )
    return state.feedback


Store = Annotated[FeedbackStore, Depends(feedback_store)]
router = APIRouter()

_FORM = {
    "type": "object",
    "required": ["file", "label"],
    "properties": {
        "file": {
            "type": "string",
            "format": "binary",
            "contentMediaType": "application/octet-stream",
            "description": f"The image ({SUPPORTED_FORMATS_TEXT}), or the PDF that holds it.",
        },
        "label": {"type": "string", "description": "What the image shows: one of the model's labels."},
        "predicted": {"type": "string", "description": "The label the person was shown, if any."},
        "model_sha256": {
            "type": "string",
            "pattern": "^[0-9a-f]{64}$",
            "description": "The sha256 of the model that answered (from GET /version).",
        },
        "page": {"type": "integer", "minimum": 0, "description": "For a PDF: the image's page."},
        "index": {"type": "integer", "minimum": 0, "description": "For a PDF: the image's index."},
    },
}


@router.post(
    "/feedback",
    tags=["feedback"],
    summary="Correct (or confirm) an answer: the image and its right label become training data",
    status_code=201,
    response_model=FeedbackStored,
    responses=problem_responses(400, 401, 403, 404, 413, 415, 422, 429, 503, 507),
    openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": _FORM}}}},
)
async def feedback(
    request: Request, store: Store, subject: FeedbackSubject, engine: FeedbackEngine, state: State
) -> FeedbackStored:
    """Send the image as the part `file` (for an image of a PDF: the PDF, with `page` and `index` as
    /predict numbered them) and its right `label`. The image is stored once per content (its sha256),
    as upright RGB PNG without metadata; your label is stored with your token's `sub` and nothing else
    of it. Labelling the same image again replaces your label. Off (404) unless the operator set
    FEEDBACK_DATABASE_URL. Kept for FEEDBACK_RETENTION_DAYS after its last change; past your daily
    quota, 429; when the store is full, 507; `DELETE /feedback` deletes everything you sent."""
    if subject is None and not state.settings.feedback_allow_anonymous:
        state.metrics.feedback_refusals.labels("anonymous").inc()
        raise HTTPException(
            403,
            "Anonymous feedback is off: authentication is disabled, so nobody's answers could be told "
            "apart. The operator can allow it for a demo with FEEDBACK_ALLOW_ANONYMOUS=true.",
        )
    files, fields = await read_form(request, "file", 1, TEXT_FIELDS)
    labels = engine.classifier.labels
    label = _model_label(fields.get("label"), labels, "label", required=True)
    predicted = _model_label(fields.get("predicted"), labels, "predicted", required=False)
    model_sha256 = fields.get("model_sha256") or None
    if model_sha256 is not None and not SHA256_HEX.fullmatch(model_sha256):
        raise HTTPException(422, "model_sha256 must be 64 lower-case hexadecimal digits (see GET /version).")
    data = files[0][1]
    budget = engine.request_budget()
    sha256, image = await _image_of(engine, data, fields, budget)
    png, width, height = await engine.training_image(image, budget)
    assert label is not None
    # Who sent it, as the quota counts senders: the subject, else the client's address; kept hashed.
    sender = client_key({"sub": subject} if subject else None, client_address(request, state))
    sender_hash = hashlib.sha256(sender.encode()).hexdigest()
    record = FeedbackRecord(sha256, png, width, height, label, subject, predicted, model_sha256, sender_hash)
    try:
        stored = await store.run(lambda: store.add(record))
    except FeedbackUnavailableError:
        state.metrics.feedback_unavailable.inc()
        raise
    except FeedbackQuotaError as exc:
        state.metrics.feedback_refusals.labels("quota").inc()
        raise HTTPException(429, str(exc), {"Retry-After": str(exc.retry_after_seconds)}) from None
    except FeedbackStoreFullError as exc:
        state.metrics.feedback_refusals.labels("store_full").inc()
        raise HTTPException(507, str(exc)) from None
    state.metrics.observe_feedback(label, predicted, model_sha256, engine.classifier.sha256)
    with suppress(FeedbackUnavailableError):
        state.metrics.feedback_store_bytes.set(await store.run(store.size_bytes))
    return FeedbackStored(id=stored.id, sha256=sha256, label=label, replaced=stored.replaced)


@router.delete(
    "/feedback/{sha256}",
    tags=["feedback"],
    summary="Withdraw your label of an image (and the image, once nobody's label is left on it)",
    status_code=204,
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def withdraw_feedback(sha256: str, store: Store, subject: FeedbackSubject) -> Response:
    """The person the token names withdraws what they sent about the image `sha256` (as POST /feedback
    answered it). Other people's labels stay; the image goes with the last one. Needs authentication:
    without it there is no person to withdraw for (the operator runs `cats-dogs-other feedback delete`)."""
    if not SHA256_HEX.fullmatch(sha256):
        raise HTTPException(422, "The image's sha256 is 64 lower-case hexadecimal digits.")
    if subject is None:
        raise HTTPException(
            403,
            "Authentication is off: feedback is anonymous, so nobody's label can be told apart. "
            "The operator can delete an image with `cats-dogs-other feedback delete SHA256`.",
        )
    if not await store.run(lambda: store.withdraw(sha256, subject)):
        raise HTTPException(404, "You have no label on this image (already withdrawn, or never sent).")
    return Response(status_code=204)


@router.delete(
    "/feedback",
    tags=["feedback"],
    summary="Delete everything you sent: your labels, and the images nobody else labelled",
    response_model=FeedbackErased,
    responses=problem_responses(401, 403, 404, 503),
)
async def erase_my_feedback(store: Store, subject: FeedbackSubject, state: State) -> FeedbackErased:
    """The person the token names erases all they contributed (the right to erasure). Images that
    someone else also labelled stay, with the other people's labels. Needs authentication: without it
    there is nobody to erase for."""
    if subject is None:
        raise HTTPException(
            403,
            "Authentication is off: feedback is anonymous, so nobody's labels can be told apart. The "
            "operator can erase a subject with `cats-dogs-other feedback erase --subject SUB`.",
        )
    removed = await store.run(lambda: store.erase(subject))
    state.metrics.feedback_purged.labels("erased_labels").inc(removed.labels)
    state.metrics.feedback_purged.labels("images").inc(removed.images)
    return FeedbackErased(labels=removed.labels, images=removed.images)


def _model_label(value: str | None, labels: list[str], name: str, required: bool) -> str | None:
    """The model's spelling of a label sent in any case; 422 for a label the model does not have."""
    if not value:
        if required:
            raise HTTPException(422, f"Missing form part '{name}': one of {', '.join(labels)}.")
        return None
    for known in labels:
        if value.strip().lower() == known.lower():
            return known
    shown = value if len(value) <= 40 else value[:40] + "…"
    raise HTTPException(
        422, f"'{shown}' is not a label of this model: {name} must be one of {', '.join(labels)}."
    )


def _position(fields: dict[str, str], name: str) -> int:
    value = fields.get(name)
    if value is None:
        raise HTTPException(
            422, "For an image of a PDF, send its 'page' and 'index' (as POST /predict numbered them)."
        )
    if not value.isdigit() or len(value) > 6:
        raise HTTPException(422, f"'{name}' must be a whole number from 0.")
    return int(value)


async def _image_of(
    engine: InferenceService, data: bytes, fields: dict[str, str], budget: RequestBudget
) -> tuple[str, ImageData]:
    """The image the feedback is about and its content hash: the file, or the PDF's image at page/index."""
    if not is_pdf(data):
        return hashlib.sha256(data).hexdigest(), data
    page, index = _position(fields, "page"), _position(fields, "index")
    document = await engine.read_document(data, budget)
    found = {(image.position.page, image.position.index): image for image in document.images}
    image = found.get((page, index))
    if image is None:
        raise HTTPException(
            422,
            f"The document has no image at page {page}, index {index} "
            f"({len(document.images)} images in {document.pages} pages).",
        )
    if image.duplicate_of is not None:
        image = found[(image.duplicate_of.page, image.duplicate_of.index)]
    if image.error is not None:
        raise image.error
    assert image.data is not None
    content = image.data if isinstance(image.data, bytes) else image.data.encoded
    return hashlib.sha256(content).hexdigest(), image.data
