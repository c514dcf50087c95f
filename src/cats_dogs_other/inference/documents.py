"""PDF documents to the images embedded in them, numbered as the course numbers them.

The course extracted images with PyMuPDF's `page.get_images()`: every image XObject a page's resources
name (and the forms they name), once per page, in resource order, pages and images counted from 0. This
module lists the same images with pypdf (docs/decisions.md: why pypdf and not PDFium), so an answer joins
the course's annotations on `(page, index)`.

Nothing is decoded here. A JPEG (`/DCTDecode`) stream is handed to the image decoder as it is stored;
any other image becomes a `PdfRaster`: a copy of its stream with every reference resolved, so that it
decodes later in any decode thread, under the shared `MemoryBudget`, without the (not thread-safe)
reader. Memory is bounded before anything is parsed further: the page count and images per document are
capped, each image's pixel count is read from its dictionary, and pypdf's own work limits are lowered to
what one allowed image can need. Page content streams are never parsed: the images are found from the
resources, so a content stream that inflates to gigabytes costs nothing.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from enum import StrEnum

from PIL import Image
from pypdf import PdfReader, apply_configuration
from pypdf.errors import DependencyError, FileNotDecryptedError, LimitReachedError
from pypdf.generic import (
    ArrayObject,
    DecodedStreamObject,
    DictionaryObject,
    EncodedStreamObject,
    IndirectObject,
    NameObject,
    StreamObject,
)

from cats_dogs_other.inference.budget import MemoryBudget
from cats_dogs_other.inference.decode import (
    DECODER_WORKSPACE_BYTES,
    SOURCE_PIXELS_INFO,
    ImageErrorKind,
    InvalidImageError,
    check_pixels,
    reduced_rgb,
    to_rgb,
)

log = logging.getLogger(__name__)

# The PDF header may follow up to 1024 bytes of junk (ISO 32000-2, annex H, as readers accept it).
PDF_MAGIC = b"%PDF-"
PDF_HEADER_WINDOW = 1024
# Resource dictionaries nest (a form's resources name forms): deeper than this is not a real document.
MAX_FORM_DEPTH = 8
# Objects resolved into one image's stand-alone copy (its colour space, palette, soft mask, ...).
MAX_RESOLVED_OBJECTS = 64
# pypdf turns a non-JPEG image into Pillow through a PNG it writes and reads back: the samples, the
# image, the PNG and the image read back (measured: 131 MiB at peak for a 12-megapixel RGB image).
PYPDF_IMAGE_BYTES_PER_PIXEL = 12
# A plain Flate image (8-bit RGB or grey, no mask) is wrapped as it is: its samples and one RGB copy.
PLAIN_IMAGE_BYTES_PER_PIXEL = 7
READING_BYTES_PER_BYTE = 8
_PLAIN_MODES = {"/DeviceRGB": "RGB", "/DeviceGray": "L"}


def reading_cost(data: bytes) -> int:
    """Bytes parsing a document may hold: its objects as Python values (measured: +48 MiB for a 10 MB
    file of 100,000 pages, +100 MiB for 16 MB of cross-reference table), the images' encoded copies."""
    return READING_BYTES_PER_BYTE * len(data) + DECODER_WORKSPACE_BYTES


def is_pdf(data: bytes) -> bool:
    """Content sniffing, as for images: a PDF is what starts with its header, whatever its name says."""
    return PDF_MAGIC in data[:PDF_HEADER_WINDOW]


class DocumentErrorKind(StrEnum):
    ENCRYPTED = "encrypted"
    MALFORMED = "malformed"
    TOO_MANY_PAGES = "too_many_pages"
    TOO_MANY_IMAGES = "too_many_images"
    TOO_SLOW = "too_slow"


class InvalidDocumentError(ValueError):
    """A document that cannot be read as a whole: `kind` names the broken rule, the message explains it."""

    def __init__(self, kind: DocumentErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class DocumentLimits:
    """What one document may cost; the values come from `Settings` (MAX_PDF_PAGES, ...)."""

    max_pages: int
    max_images: int
    max_pixels: int
    seconds: float


@dataclass(frozen=True)
class ImagePosition:
    page: int
    index: int


@dataclass(eq=False)
class PdfRaster:
    """A non-JPEG image of a document, detached from its reader: decodes in any thread, once."""

    stream: StreamObject
    width: int
    height: int
    plain_mode: str | None  # "RGB" or "L" when the samples can be wrapped as they are

    @property
    def encoded(self) -> bytes:
        """The stream as stored in the document (what identifies the image's content)."""
        return bytes(self.stream._data)

    @property
    def encoded_bytes(self) -> int:
        return len(self.stream._data)

    @property
    def cost(self) -> int:
        per_pixel = PLAIN_IMAGE_BYTES_PER_PIXEL if self.plain_mode else PYPDF_IMAGE_BYTES_PER_PIXEL
        return self.width * self.height * per_pixel + DECODER_WORKSPACE_BYTES

    def decode(self, min_side: int | None = None, budget: MemoryBudget | None = None) -> Image.Image:
        """The image as upright 8-bit RGB, reduced like any decoded image; InvalidImageError if it fails."""
        if budget is not None and self.cost > budget.capacity:
            raise InvalidImageError(
                ImageErrorKind.TOO_MANY_PIXELS,
                f"The embedded image is too large to decode ({self.width}x{self.height}): it needs about "
                f"{self.cost / 1e6:,.0f} MB, over the decoding budget of {budget.capacity / 1e6:,.0f} MB.",
            )
        with budget.reserve(self.cost) if budget is not None else nullcontext():
            try:
                image = self._pillow_image()
                if image.size != (self.width, self.height):
                    raise ValueError(f"decoded {image.size}, declared {self.width}x{self.height}")
                decoded = reduced_rgb(image, min_side) if min_side else to_rgb(image)
                decoded.info[SOURCE_PIXELS_INFO] = self.width * self.height
                return decoded
            except InvalidImageError:
                raise
            except Exception as exc:  # pypdf and Pillow raise many types for bad streams
                raise InvalidImageError(
                    ImageErrorKind.CORRUPT, f"The embedded image cannot be decoded ({_reason(exc)})."
                ) from None

    def _pillow_image(self) -> Image.Image:
        samples_limit = self.width * self.height * 4 + 1024
        with apply_configuration(
            zlib_maximum_output_length=samples_limit,
            lzw_maximum_output_length=samples_limit,
            run_length_maximum_output_length=samples_limit,
            jbig2_maximum_output_length=samples_limit,
            image_maximum_buffer_size=samples_limit,
        ):
            if self.plain_mode is not None:
                samples = self.stream.get_data()
                channels = len(self.plain_mode)
                expected = self.width * self.height * channels
                if len(samples) < expected:
                    raise ValueError(f"{len(samples)} bytes of samples, {expected} needed")
                mode, size = self.plain_mode, (self.width, self.height)
                return Image.frombuffer(mode, size, samples[:expected], "raw", mode, 0, 1)
            image = self.stream.decode_as_image()
        if not isinstance(image, Image.Image):
            raise ValueError("no decoder for this image")
        image.load()
        return image


@dataclass
class EmbeddedImage:
    """One image of a document: its encoded data to classify, or why it was not, or whose copy it is."""

    position: ImagePosition
    width: int
    height: int
    data: bytes | PdfRaster | None = None
    error: InvalidImageError | None = None
    duplicate_of: ImagePosition | None = None


@dataclass
class Document:
    pages: int
    images: list[EmbeddedImage] = field(default_factory=list)

    @property
    def to_classify(self) -> list[EmbeddedImage]:
        """The images the model must see: neither copies of earlier ones nor refused ones."""
        return [image for image in self.images if image.data is not None]


def read_document(data: bytes, limits: DocumentLimits) -> Document:
    """Every image of every page, or InvalidDocumentError for a document that cannot be read at all.

    A single image that breaks a rule (too many pixels, an unusable dictionary) gets its own `error`;
    the others are still listed. Blocking and CPU-bound: call it from a worker thread.
    """
    deadline = time.monotonic() + limits.seconds
    try:
        # pypdf's limits, lowered to what an allowed document can need: bounded work and memory
        # before this module's own checks run.
        with apply_configuration(
            page_tree_maximum_entries=limits.max_pages + 1,
            page_tree_maximum_depth=32,
            maximum_declared_stream_length=len(data),
        ):
            return _read(data, limits, deadline)
    except InvalidDocumentError:
        raise
    except LimitReachedError as exc:
        if "page tree" in str(exc):
            raise _too_many_pages(None, limits.max_pages) from None
        raise _malformed(exc) from None
    except RecursionError:
        raise InvalidDocumentError(DocumentErrorKind.MALFORMED, "The PDF nests objects too deeply.") from None
    except Exception as exc:  # a PDF parser meets every kind of broken file: all of it is the client's
        raise _malformed(exc) from None


def _read(data: bytes, limits: DocumentLimits, deadline: float) -> Document:
    reader = PdfReader(io.BytesIO(data), strict=False)
    if reader.is_encrypted:
        _decrypt(reader)
    pages = len(reader.pages)
    if pages > limits.max_pages:
        raise _too_many_pages(pages, limits.max_pages)
    document = Document(pages=pages)
    seen: dict[str, ImagePosition] = {}
    for page_number, page in enumerate(reader.pages):
        _check_time(deadline, limits.seconds, page_number)
        for index, stream in enumerate(_page_images(page)):
            _check_time(deadline, limits.seconds, page_number)
            if len(document.images) >= limits.max_images:
                raise InvalidDocumentError(
                    DocumentErrorKind.TOO_MANY_IMAGES,
                    f"The PDF has more than {limits.max_images} images; the limit is "
                    f"MAX_IMAGES_PER_DOCUMENT={limits.max_images}. Split it and send the parts.",
                )
            document.images.append(_embedded(stream, ImagePosition(page_number, index), limits, seen))
    return document


def _check_time(deadline: float, seconds: float, page: int) -> None:
    """The time budget, checked between pages and images: each step is bounded by pypdf's work limits."""
    if time.monotonic() > deadline:
        raise InvalidDocumentError(
            DocumentErrorKind.TOO_SLOW,
            f"Reading the PDF took longer than {seconds:g} s (PDF_TIME_BUDGET_SECONDS); "
            f"it stopped at page {page}.",
        )


def _decrypt(reader: PdfReader) -> None:
    """Open a document protected by an owner password only (it reads without one); refuse the rest."""
    try:
        if reader.decrypt(""):
            return
    except (DependencyError, FileNotDecryptedError, NotImplementedError):
        pass
    raise InvalidDocumentError(
        DocumentErrorKind.ENCRYPTED,
        "The PDF is encrypted with a password; send it without the password protection.",
    )


def _page_images(page: DictionaryObject) -> Iterator[StreamObject]:
    """The image streams a page's resources name, forms' included, each once, in resource order."""
    seen: set[tuple[int, int] | int] = set()

    def walk(value: object, depth: int) -> Iterator[StreamObject]:
        resources = _resolved(value)
        if not isinstance(resources, DictionaryObject) or depth > MAX_FORM_DEPTH:
            return
        xobjects = _resolved(resources.get("/XObject"))
        if not isinstance(xobjects, DictionaryObject):
            return
        for value in xobjects.values():
            key = (value.idnum, value.generation) if isinstance(value, IndirectObject) else id(value)
            stream = _resolved(value)
            if key in seen or not isinstance(stream, StreamObject):
                continue
            seen.add(key)
            subtype = stream.get("/Subtype")
            if subtype == "/Image":
                yield stream
            elif subtype == "/Form":
                yield from walk(stream.get("/Resources"), depth + 1)

    yield from walk(page.get("/Resources"), 0)


def _embedded(
    stream: StreamObject, position: ImagePosition, limits: DocumentLimits, seen: dict[str, ImagePosition]
) -> EmbeddedImage:
    width, height = _resolved(stream.get("/Width")), _resolved(stream.get("/Height"))
    if not isinstance(width, int) or not isinstance(height, int) or width <= 0 or height <= 0:
        error = "The embedded image has no valid /Width and /Height."
        return EmbeddedImage(position, 0, 0, error=InvalidImageError(ImageErrorKind.CORRUPT, error))
    image = EmbeddedImage(position, width, height)
    try:
        check_pixels((width, height), limits.max_pixels)
        data = _image_data(stream, width, height, limits.max_pixels)
    except InvalidImageError as exc:
        image.error = exc
        return image
    key = _identity(stream, data)
    if key in seen:
        image.duplicate_of = seen[key]
    else:
        seen[key] = position
        image.data = data
    return image


def _image_data(stream: StreamObject, width: int, height: int, max_pixels: int) -> bytes | PdfRaster:
    filters = _filters(stream)
    if filters == ["/DCTDecode"]:
        return bytes(stream._data)  # the JPEG as stored: the decoder reads it (and its header) itself
    detached = _detached(stream, max_pixels, [0])
    assert isinstance(detached, StreamObject)
    plain = (
        filters in ([], ["/FlateDecode"])
        and _resolved(stream.get("/BitsPerComponent")) == 8
        and not any(key in stream for key in ("/SMask", "/Mask", "/Decode", "/ImageMask"))
    )
    colour_space = _resolved(stream.get("/ColorSpace"))
    mode = _PLAIN_MODES.get(str(colour_space)) if plain and isinstance(colour_space, NameObject) else None
    return PdfRaster(detached, width, height, mode)


def _filters(stream: StreamObject) -> list[str]:
    value = _resolved(stream.get("/Filter"))
    if value is None:
        return []
    if isinstance(value, ArrayObject):
        return [str(_resolved(item)) for item in value]
    return [str(value)]


def _detached(item: object, max_pixels: int, count: list[int]) -> object:
    """A copy of `item` with every indirect reference replaced by its object (a soft mask, a palette,
    an ICC profile): a stand-alone stream pypdf decodes without the reader."""
    value = _resolved(item)
    count[0] += 1
    if count[0] > MAX_RESOLVED_OBJECTS:
        raise InvalidImageError(ImageErrorKind.CORRUPT, "The embedded image's dictionary is too large.")
    if isinstance(value, StreamObject):
        if value.get("/Subtype") == "/Image":  # a soft mask is an image too: it obeys the same limit
            check_pixels((_int(value.get("/Width")), _int(value.get("/Height"))), max_pixels)
        copy: StreamObject = EncodedStreamObject() if "/Filter" in value else DecodedStreamObject()
        copy._data = value._data
        for key, item in value.items():
            copy[NameObject(key)] = _detached(item, max_pixels, count)
        return copy
    if isinstance(value, DictionaryObject):
        result = DictionaryObject()
        for key, item in value.items():
            result[NameObject(key)] = _detached(item, max_pixels, count)
        return result
    if isinstance(value, ArrayObject):
        return ArrayObject(_detached(item, max_pixels, count) for item in value)
    return value


def _identity(stream: StreamObject, data: bytes | PdfRaster) -> str:
    """Equal encoded content means equal pixels: the course's PDFs repeat an image as a second object.

    A JPEG is its bytes; another image is its samples and how its dictionary says to read them
    (filters, colour space, mask: references compare as references, so equal masks stored twice count
    as different, which only costs a second model call)."""
    digest = hashlib.sha256()
    if isinstance(data, PdfRaster):
        digest.update(repr(sorted((str(k), repr(v)) for k, v in stream.items() if k != "/Length")).encode())
        digest.update(stream._data)
    else:
        digest.update(data)
    return digest.hexdigest()


def _resolved(value: object) -> object:
    return value.get_object() if isinstance(value, IndirectObject) else value


def _int(value: object) -> int:
    value = _resolved(value)
    return value if isinstance(value, int) else 0


def _too_many_pages(pages: int | None, limit: int) -> InvalidDocumentError:
    counted = f"{pages} pages" if pages is not None else f"more than {limit} pages"
    return InvalidDocumentError(
        DocumentErrorKind.TOO_MANY_PAGES,
        f"The PDF has {counted}; the limit is MAX_PDF_PAGES={limit}. Split it and send the parts.",
    )


def _malformed(exc: BaseException) -> InvalidDocumentError:
    return InvalidDocumentError(
        DocumentErrorKind.MALFORMED, f"The PDF is malformed or truncated and cannot be read ({_reason(exc)})."
    )


def _reason(exc: BaseException) -> str:
    """A short, safe reason: the exception's type and the start of its message (never document bytes)."""
    message = str(exc).splitlines()[0][:120] if str(exc) else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
