"""Response bodies, with the examples Swagger and ReDoc show."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from cats_dogs_other.api.problems import ProblemDetails

_VALUES: list[JsonValue] = [0.9981, 0.0012, 0.0007]
THUMBNAIL_DESCRIPTION = (
    "With `?thumbnails=true`: the image as the model saw it (upright), at most 128 pixels a side, as a "
    "`data:image/jpeg;base64,` URL."
)


class Health(BaseModel):
    status: Literal["OK"] = "OK"


class Readiness(BaseModel):
    status: Literal["ready"] = "ready"


class PredictionResponse(BaseModel):
    """The course's contract: the winning label and one value per label, in the model's label order."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"prediction": "Cat", "values": _VALUES}]})

    prediction: str = Field(description="The most likely label.", examples=["Cat"])
    values: list[float] = Field(
        description="One value per label, in label order (Cat, Dog, Other for the default model); "
        "probabilities that sum to 1 when the model card says the outputs are probabilities."
    )


class FilePrediction(PredictionResponse):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"filename": "tom.jpg", "prediction": "Cat", "values": _VALUES}]}
    )

    filename: str | None = Field(
        None, description="The file name the client sent, if any.", examples=["tom.jpg"]
    )
    thumbnail: str | None = Field(None, description=THUMBNAIL_DESCRIPTION)


class FileFailure(BaseModel):
    """One file of a batch that could not be classified; the other files are unaffected."""

    filename: str | None = Field(
        None, description="The file name the client sent, if any.", examples=["notes.txt"]
    )
    error: ProblemDetails


class ImagePosition(BaseModel):
    page: int = Field(description="The page, counted from 0.", examples=[0])
    index: int = Field(description="The image on its page, counted from 0.", examples=[0])


class DocumentImagePrediction(BaseModel):
    """One image of a PDF: where it is (the course's `{document}_page{p}_index{i}`), its size, its answer."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"page": 0, "index": 0, "width": 332, "height": 500, "prediction": "Dog", "values": _VALUES}
            ]
        }
    )

    page: int = Field(description="The page, counted from 0.")
    index: int = Field(description="The image on its page, counted from 0 (the course's numbering).")
    width: int = Field(description="The image's width in pixels, as stored in the PDF.")
    height: int = Field(description="The image's height in pixels, as stored in the PDF.")
    prediction: str = Field(description="The most likely label.", examples=["Dog"])
    values: list[float] = Field(description="One value per label, in label order (as for an image).")
    thumbnail: str | None = Field(None, description=THUMBNAIL_DESCRIPTION)
    duplicate_of: ImagePosition | None = Field(
        None,
        description="Set when the image's content equals an earlier image of the same document: its "
        "answer is that image's, computed once.",
    )


class DocumentImageFailure(BaseModel):
    """One image of a PDF that could not be classified (too large, undecodable); the others are answered."""

    page: int
    index: int
    width: int
    height: int
    error: ProblemDetails


class DocumentPrediction(BaseModel):
    """A PDF: its page count and every embedded image in page order."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "filename": "litter.pdf",
                    "pages": 2,
                    "images": [
                        {
                            "page": 0,
                            "index": 0,
                            "width": 332,
                            "height": 500,
                            "prediction": "Dog",
                            "values": _VALUES,
                        },
                        {
                            "page": 1,
                            "index": 0,
                            "width": 332,
                            "height": 500,
                            "prediction": "Dog",
                            "values": _VALUES,
                            "duplicate_of": {"page": 0, "index": 0},
                        },
                    ],
                }
            ]
        }
    )

    filename: str | None = Field(None, description="The file name the client sent, if any.")
    pages: int = Field(description="Pages in the document.")
    images: list[DocumentImagePrediction | DocumentImageFailure] = Field(
        description="The images the pages' resources name, in page order; empty for a PDF without images."
    )


class ModelInfo(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    name: str = Field(examples=["cats-dogs-other-efficientnet-lite0"])
    source: str = Field(description="Where the served model came from (a path or URI).")
    registry_version: str | None = Field(None, description="The MLflow model version, for a models:/ URI.")
    run_id: str | None = Field(None, description="The MLflow run that produced the model, when known.")
    sha256: str = Field(description="SHA-256 of the model file.")
    labels: list[str] = Field(examples=[["Cat", "Dog", "Other"]])
    input_size: tuple[int, int] = Field(
        description="Height and width the model takes.", examples=[(224, 224)]
    )
    outputs_are_probabilities: bool
    runtime: Literal["onnxruntime", "openvino", "keras"] = Field(
        description="What runs the model (INFERENCE_RUNTIME; a Keras file runs on Keras)."
    )


class AuthInfo(BaseModel):
    """What a client needs to get a token; the web page signs people in with it (nothing secret)."""

    mode: Literal["disabled", "oauth2"]
    issuer: str | None = None
    audience: str | None = None
    required_scope: str | None = None
    client_id: str | None = Field(
        None, description="The web page's public OpenID Connect client (OAUTH2_CLIENT_ID), when set."
    )
    audience_parameter: Literal["audience", "resource", "none"] | None = Field(
        None, description="The authorization request parameter that names the audience."
    )


class FeedbackInfo(BaseModel):
    """Whether POST /feedback stores corrections here, the scope it needs when auth is on, and what is
    kept: what the page tells people before they send anything."""

    enabled: bool
    required_scope: str | None = None
    retention_days: float | None = Field(
        None,
        description="Days a label is kept after its last change (FEEDBACK_RETENTION_DAYS); null: until "
        "deleted.",
    )
    daily_quota: int | None = Field(
        None, description="Labels one person may add in 24 hours (FEEDBACK_DAILY_QUOTA); null: no quota."
    )


class FeedbackStored(BaseModel):
    """A correction, stored: its record's id and the image's content hash (what `feedback delete` takes)."""

    model_config = ConfigDict(protected_namespaces=())

    id: str = Field(description="The record's id.")
    sha256: str = Field(
        description="The image's sha256: of the file sent, or of the PDF's embedded image. Give it to "
        "the operator (`cats-dogs-other feedback delete SHA256`) to withdraw the image and its labels."
    )
    label: str = Field(description="The label stored, as the model spells it.", examples=["Dog"])
    replaced: bool = Field(
        description="True when this person had labelled this image before: their label was replaced."
    )


class FeedbackErased(BaseModel):
    """What `DELETE /feedback` deleted of what the person sent."""

    labels: int = Field(description="Your labels deleted.", examples=[12])
    images: int = Field(
        description="Images deleted with them: those nobody else had labelled (the others stay, with "
        "the other people's labels).",
        examples=[9],
    )


class VersionInfo(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    version: str = Field(description="The cats-dogs-other package version.", examples=["0.1.0"])
    model: ModelInfo
    auth: AuthInfo
    feedback: FeedbackInfo
