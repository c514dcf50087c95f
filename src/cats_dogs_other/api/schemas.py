"""Response bodies, with the examples Swagger and ReDoc show."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from cats_dogs_other.api.problems import ProblemDetails

_VALUES: list[JsonValue] = [0.9981, 0.0012, 0.0007]


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


class FileFailure(BaseModel):
    """One file of a batch that could not be classified; the other files are unaffected."""

    filename: str | None = Field(
        None, description="The file name the client sent, if any.", examples=["notes.txt"]
    )
    error: ProblemDetails


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


class AuthInfo(BaseModel):
    mode: Literal["disabled", "oauth2"]
    issuer: str | None = None
    audience: str | None = None
    required_scope: str | None = None


class VersionInfo(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    version: str = Field(description="The cats-dogs-other package version.", examples=["0.1.0"])
    model: ModelInfo
    auth: AuthInfo
