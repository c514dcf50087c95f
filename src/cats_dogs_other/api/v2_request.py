"""The Open Inference Protocol (v2) inference request: parsed by a schema, bounded before it is parsed.

A v2 body is JSON (with base64 images) or a JSON header followed by binary tensors. Memory is bounded
before any parsing: the JSON's arrays, objects and elements are counted in the raw bytes (a 10 MB body of
`[{},{},…]` would otherwise become millions of objects), nesting depth is bounded by the parser, and the
number of images is capped by `max_elements` before any image is touched. Every malformed request is a
`V2RequestError` (400), never a 500.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

HEADER_LENGTH = "Inference-Header-Content-Length"
PositiveInt = Annotated[int, Field(strict=True, gt=0)]
NonNegativeInt = Annotated[int, Field(strict=True, ge=0)]
# JSON structure a request may have beyond one element per image: the envelope, shape, parameters and
# requested outputs take a few dozen at most.
ENVELOPE_STRUCTURE = 64


class V2RequestError(ValueError):
    """A malformed inference request; the message says what to fix."""


class _Schema(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class InputParameters(_Schema):
    binary_data_size: NonNegativeInt | None = None


class RequestInput(_Schema):
    name: StrictStr
    shape: list[PositiveInt] = Field(min_length=1, max_length=8)
    datatype: StrictStr
    parameters: InputParameters | None = None
    # Any JSON scalar parses, so that a tensor of numbers hears "not BYTES" rather than a type error.
    data: list[StrictStr | StrictInt | StrictFloat | StrictBool | None] | None = None


class OutputParameters(_Schema):
    binary_data: StrictBool | None = None


class RequestOutput(_Schema):
    name: StrictStr
    parameters: OutputParameters | None = None


class RequestParameters(_Schema):
    binary_data_output: StrictBool | None = None


class InferenceRequest(_Schema):
    id: StrictStr | None = None
    parameters: RequestParameters | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


@dataclass(frozen=True)
class ParsedInferRequest:
    request: InferenceRequest
    images: list[bytes]


def parse_infer_request(body: bytes, header_length: str | None, max_elements: int) -> ParsedInferRequest:
    """The request and its encoded images; V2RequestError for anything malformed or over the limits."""
    header, binary = _split(body, header_length)
    structure = header.count(b"[") + header.count(b"{") + header.count(b",")
    allowed = ENVELOPE_STRUCTURE + 2 * max_elements
    if structure > allowed:
        raise V2RequestError(
            f"The inference request's JSON has {structure:,} arrays, objects and elements; at most "
            f"{allowed} are accepted for up to {max_elements} images (MAX_FILES_PER_REQUEST)."
        )
    try:
        request = InferenceRequest.model_validate_json(header)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
            for error in exc.errors()[:3]
        )
        raise V2RequestError(f"The inference request is not valid: {problems}.") from None
    if len(request.inputs) != 1:
        raise V2RequestError("Send exactly one input: the encoded images, as a BYTES tensor.")
    tensor = request.inputs[0]
    if tensor.datatype != "BYTES":
        raise V2RequestError(f"The input must be a BYTES tensor of encoded images, not {tensor.datatype}.")
    count = 1
    for dimension in tensor.shape:
        count *= dimension
        if count > max_elements:
            raise V2RequestError(
                f"The input's shape {tensor.shape} holds more than {max_elements} images, "
                "the most one request may carry (MAX_FILES_PER_REQUEST)."
            )
    size = tensor.parameters.binary_data_size if tensor.parameters else None
    if size is not None:
        if size > len(binary):
            raise V2RequestError(f"binary_data_size is {size} but only {len(binary)} bytes follow the JSON.")
        images = _unpack_bytes(binary[:size], count)
    elif tensor.data is not None:
        if len(tensor.data) != count:
            raise V2RequestError(
                f"The input's shape {tensor.shape} does not match its {len(tensor.data)} element(s)."
            )
        strings = [item for item in tensor.data if isinstance(item, str)]
        if len(strings) != count:
            raise V2RequestError("`data` must hold base64 strings (or use the binary data extension).")
        try:
            images = [base64.b64decode(item, validate=True) for item in strings]
        except (binascii.Error, ValueError) as exc:
            raise V2RequestError("An element of `data` is not valid base64.") from exc
    else:
        raise V2RequestError("The input has neither `data` nor `binary_data_size`.")
    return ParsedInferRequest(request, images)


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    if not header_length.isdigit() or not 0 < int(header_length) <= len(body):
        raise V2RequestError(
            f"{HEADER_LENGTH} must be the byte length of the JSON part (1 to {len(body)}), "
            f"not {header_length[:20]!r}."
        )
    size = int(header_length)
    return body[:size], body[size:]


def _unpack_bytes(raw: bytes, count: int) -> list[bytes]:
    """The binary BYTES layout: each element is a 4-byte little-endian length, then that many bytes.
    Exactly `count` elements, filling `raw` exactly."""
    items, offset = [], 0
    for _ in range(count):
        if offset + 4 > len(raw):
            raise V2RequestError(f"The binary BYTES tensor holds fewer than its shape's {count} element(s).")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise V2RequestError("The binary BYTES tensor is truncated.")
        items.append(raw[offset : offset + length])
        offset += length
    if offset != len(raw):
        raise V2RequestError(f"The binary BYTES tensor holds more than its shape's {count} element(s).")
    return items
