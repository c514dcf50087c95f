"""PDF documents to the images embedded in them, numbered as the course numbers them.

The course extracted images with PyMuPDF's `page.get_images()`: every image XObject a page's resources
name (and the forms they name), once per page, in resource order, pages and images counted from 0. This
module lists the same images with pypdf (docs/decisions.md: why pypdf and not PDFium), so an answer joins
the course's annotations on `(page, index)`.

Nothing is decoded here. A JPEG (`/DCTDecode`) stream is handed to the image decoder as it is stored;
any other image becomes a `PdfRaster`: a copy of its stream with every reference resolved, so that it
decodes later in any decode thread, under the request's `RequestBudget`, without the (not thread-safe)
reader. Memory is bounded before anything is parsed further: the page count, the XObjects visited and the
images per document are capped, each image's pixel count is read from its dictionary, and pypdf's own
work limits are lowered to what one allowed image can need. Page content streams are never parsed: the
images are found from the resources, so a content stream that inflates to gigabytes costs nothing.

Every stream pypdf decompresses (object and cross-reference streams while reading, an image's samples
while decoding) is charged where pypdf produces it: `_charged_decode_stream_data` replaces
`pypdf.filters.decode_stream_data` and sets pypdf's output limits to what the current `InflationAllowance`
has left, an allowance whose memory was reserved before. Nothing is decompressed twice or kept: an image
decodes from a fresh copy of its stream, so pypdf's cache of decoded data dies with the decode.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import StrEnum

import pypdf.filters
from PIL import Image
from pypdf import PdfReader, apply_configuration
from pypdf.errors import DependencyError, FileNotDecryptedError, LimitReachedError, PyPdfError
from pypdf.generic import (
    ArrayObject,
    DecodedStreamObject,
    DictionaryObject,
    EncodedStreamObject,
    IndirectObject,
    NameObject,
    StreamObject,
)

from cats_dogs_other.inference.budget import RequestBudget
from cats_dogs_other.inference.decode import (
    SOURCE_PIXELS_INFO,
    ImageErrorKind,
    InvalidImageError,
    check_pixels,
    reduced_rgb,
    to_rgb,
)
from cats_dogs_other.inference.limits import DECODER_WORKSPACE_BYTES, DocumentLimits

log = logging.getLogger(__name__)

# The PDF header may follow up to 1024 bytes of junk (ISO 32000-2, annex H, as readers accept it).
PDF_MAGIC = b"%PDF-"
PDF_HEADER_WINDOW = 1024
# Resource dictionaries nest (a form's resources name forms): deeper than this is not a real document.
MAX_FORM_DEPTH = 8
# XObjects (images and forms) looked at in one document, every page's resources counted: a real document
# names a few per page; pages that share thousands of forms make millions (BENCHMARKS.md, *Hostile
# documents within one request's budget*).
MAX_XOBJECTS_VISITED = 10_000
# Objects resolved into one image's stand-alone copy (its colour space, palette, soft mask, ...).
MAX_RESOLVED_OBJECTS = 64
# pypdf turns a non-JPEG image into Pillow through a PNG it writes and reads back: the samples, the
# image, the PNG and the image read back (BENCHMARKS.md, *Hostile documents within one request's budget*).
# Besides the samples (reserved as they are declared): 9 bytes a pixel for that route, 4 for the RGB copy
# of a plain image (8-bit RGB or grey Flate samples without a mask, wrapped as they are).
PYPDF_IMAGE_BYTES_PER_PIXEL = 9
PLAIN_IMAGE_BYTES_PER_PIXEL = 4
# Parsing holds the document's objects as Python values, about ten bytes for each byte read at worst
# (a large cross-reference table; BENCHMARKS.md, *Hostile documents within one request's budget*).
READING_BYTES_PER_BYTE = 10
# What object and cross-reference streams may inflate to while a document is read, and what a decoded
# byte of them costs once parsed into Python objects (a 3-byte `1 0 R` becomes ~100 bytes of objects).
READING_INFLATION_FLOOR = 2 << 20
READING_INFLATION_PER_BYTE = 1 / 16
PARSED_BYTES_PER_INFLATED_BYTE = 40
# Decompression bombs (docs/decisions.md): an image whose samples would take more than this many times
# its stored stream, past the floor, is refused unread; photos compress losslessly 1.5-4 times.
INFLATION_FLOOR = 4 << 20
MAX_INFLATION_RATIO = 100
# pypdf undoes PNG and TIFF predictors, LZW and ASCII85 in Python, about 4-8 MiB a second: an image
# needing one of them may inflate to this much (half a second), no more.
SLOW_FILTER_BYTES = 2 << 20
_SLOW_FILTERS = frozenset({"/LZWDecode", "/LZW", "/ASCII85Decode", "/A85"})
# Filters whose output is the image file itself (decoded by Pillow, bounded by its pixel count).
_IMAGE_CODECS = frozenset({"/DCTDecode", "/DCT", "/JPXDecode"})
_PLAIN_MODES = {"/DeviceRGB": "RGB", "/DeviceGray": "L"}
_COMPONENTS = {
    "/DeviceGray": 1, "/CalGray": 1, "/Indexed": 1, "/I": 1, "/Separation": 1, "/G": 1,
    "/DeviceRGB": 3, "/CalRGB": 3, "/Lab": 3, "/RGB": 3,
    "/DeviceCMYK": 4, "/CMYK": 4,
}  # fmt: skip


def reading_allowance(data: bytes) -> int:
    """Bytes the streams read with the document (object and cross-reference streams) may inflate to."""
    return READING_INFLATION_FLOOR + int(len(data) * READING_INFLATION_PER_BYTE)


def reading_cost(data: bytes) -> int:
    """Bytes parsing a document may hold: its objects as Python values, its streams inflated while
    reading and parsed, the images' encoded copies."""
    parsed = PARSED_BYTES_PER_INFLATED_BYTE * reading_allowance(data)
    return READING_BYTES_PER_BYTE * len(data) + parsed + DECODER_WORKSPACE_BYTES


class InflationAllowance:
    """Bytes pypdf may still produce by decompressing streams in this context (reading one document, or
    decoding one image). Its memory is reserved before it is set; pypdf's output limits are set to
    what is left, so no filter can produce more."""

    def __init__(self, nbytes: int) -> None:
        self.left = nbytes
        self.used = 0
        self.exceeded = False  # pypdf may wrap the LimitReachedError (as "Trailer cannot be read: ...")


_ALLOWANCE: ContextVar[InflationAllowance | None] = ContextVar("cats_dogs_other_pdf_inflation", default=None)
_PYPDF_DECODE_STREAM_DATA = pypdf.filters.decode_stream_data


@contextmanager
def inflating(nbytes: int) -> Iterator[InflationAllowance]:
    """Let pypdf inflate at most `nbytes` in all, in this thread, for the duration of the block."""
    allowance = InflationAllowance(nbytes)
    token = _ALLOWANCE.set(allowance)
    try:
        yield allowance
    finally:
        _ALLOWANCE.reset(token)


def _charged_decode_stream_data(stream: StreamObject) -> bytes:
    """pypdf's `decode_stream_data`, with its output limits set to the current allowance and its
    output charged to it. Outside an allowance (a user's own pypdf calls), pypdf's defaults apply."""
    allowance = _ALLOWANCE.get()
    if allowance is None:
        return _PYPDF_DECODE_STREAM_DATA(stream)
    if allowance.left <= 0:  # pypdf reads 0 as "no limit"
        allowance.exceeded = True
        raise LimitReachedError("Limit reached: no inflation allowance left.")
    limit = allowance.left
    with _noting_limits(allowance), apply_configuration(
        zlib_maximum_output_length=limit,
        lzw_maximum_output_length=limit,
        run_length_maximum_output_length=limit,
        brotli_maximum_output_length=limit,
        jbig2_maximum_output_length=limit,
        array_based_stream_maximum_output_length=limit,
        stream_filters_maximum_length=4,
    ):
        data = _PYPDF_DECODE_STREAM_DATA(stream)
    if len(data) > allowance.left:  # a filter without a limit of its own (none grows today)
        allowance.exceeded = True
        raise LimitReachedError(f"Limit reached: a stream inflated to {len(data)} bytes.")
    allowance.left -= len(data)
    allowance.used += len(data)
    return data


@contextmanager
def _noting_limits(allowance: InflationAllowance) -> Iterator[None]:
    try:
        yield
    except LimitReachedError:
        allowance.exceeded = True
        raise


def _install_charged_decoding() -> None:
    """pypdf's stream objects look `decode_stream_data` up in `pypdf.filters` at each call (pypdf 7.x;
    tests/inference/test_documents.py fails clearly if a release stops doing so)."""
    pypdf.filters.decode_stream_data = _charged_decode_stream_data


_install_charged_decoding()


def is_pdf(data: bytes) -> bool:
    """Content sniffing, as for images: a PDF is what starts with its header, whatever its name says."""
    return PDF_MAGIC in data[:PDF_HEADER_WINDOW]


class DocumentErrorKind(StrEnum):
    ENCRYPTED = "encrypted"
    MALFORMED = "malformed"
    TOO_MANY_PAGES = "too_many_pages"
    TOO_MANY_IMAGES = "too_many_images"
    TOO_COMPLEX = "too_complex"
    TOO_SLOW = "too_slow"


class InvalidDocumentError(ValueError):
    """A document that cannot be read as a whole: `kind` names the broken rule, the message explains it."""

    def __init__(self, kind: DocumentErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind




@dataclass(frozen=True)
class ImagePosition:
    page: int
    index: int


@dataclass(eq=False)
class PdfRaster:
    """A non-JPEG image of a document, detached from its reader: decodes in any thread, once.

    `samples` is what its streams (its own and its masks') may inflate to, as their dictionaries declare
    them: reserved with the rest of the decode's memory before pypdf inflates anything.
    """

    stream: StreamObject
    width: int
    height: int
    plain_mode: str | None  # "RGB" or "L" when the samples can be wrapped as they are
    samples: int = 0

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
        return self.samples + self.width * self.height * per_pixel + DECODER_WORKSPACE_BYTES

    def decode(self, min_side: int | None = None, budget: RequestBudget | None = None) -> Image.Image:
        """The image as upright 8-bit RGB, reduced like any decoded image; InvalidImageError if it fails."""
        if budget is not None and self.cost > budget.capacity:
            raise InvalidImageError(
                ImageErrorKind.TOO_MANY_PIXELS,
                f"The embedded image is too large to decode ({self.width}x{self.height}): it needs about "
                f"{self.cost / 1e6:,.0f} MB, over the decoding budget of {budget.capacity / 1e6:,.0f} MB.",
            )
        allowed = self.samples if budget is None else min(self.samples, budget.inflation_left)
        if budget is not None and allowed < self.samples:
            raise InvalidImageError(
                ImageErrorKind.DECOMPRESSION_BOMB,
                f"The request's documents have inflated {budget.inflation_bytes >> 20} MiB of compressed "
                "images already, the most one request may; this one was not decoded. Send fewer images "
                "per request.",
            )
        with (
            budget.reserve(self.cost) if budget is not None else nullcontext(),
            inflating(allowed) as inflation,
        ):
            try:
                image = self._pillow_image()
                if image.size != (self.width, self.height):
                    raise ValueError(f"decoded {image.size}, declared {self.width}x{self.height}")
                decoded = reduced_rgb(image, min_side) if min_side else to_rgb(image)
                decoded.info[SOURCE_PIXELS_INFO] = self.width * self.height
                return decoded
            except LimitReachedError:
                raise InvalidImageError(
                    ImageErrorKind.CORRUPT,
                    f"The embedded image's stream inflates past the {self.width}x{self.height} samples its "
                    "dictionary declares; it cannot be decoded.",
                ) from None
            except (PyPdfError, NotImplementedError, OSError, ValueError, SyntaxError, EOFError) as exc:
                # pypdf's errors (NotImplementedError: a filter it does not know), and Pillow's for bad data
                raise _undecodable(exc) from None
            except (TypeError, KeyError, IndexError, AttributeError, AssertionError) as exc:
                if not _raised_in_pypdf(exc):
                    raise  # ours: a bug
                raise _undecodable(exc) from None
            finally:
                if budget is not None:
                    budget.inflated(inflation.used)

    def _pillow_image(self) -> Image.Image:
        """Decoded from a fresh copy of the stream: pypdf caches decoded data on the stream object it
        decodes, and that copy (with its cache) is dropped when this returns."""
        stream = _detached(self.stream, None, [0])
        assert isinstance(stream, StreamObject)
        with apply_configuration(image_maximum_buffer_size=self.width * self.height * 4 + 1024):
            if self.plain_mode is not None:
                samples = stream.get_data()
                channels = len(self.plain_mode)
                expected = self.width * self.height * channels
                if len(samples) < expected:
                    raise ValueError(f"{len(samples)} bytes of samples, {expected} needed")
                mode, size = self.plain_mode, (self.width, self.height)
                return Image.frombuffer(mode, size, samples[:expected], "raw", mode, 0, 1)
            image = stream.decode_as_image()
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


def read_document(data: bytes, limits: DocumentLimits, budget: RequestBudget | None = None) -> Document:
    """Every image of every page, or InvalidDocumentError for a document that cannot be read at all.

    A single image that breaks a rule (too many pixels, an unusable dictionary, a decompression bomb)
    gets its own `error`; the others are still listed. Reading reserves its memory from `budget` and
    charges its CPU time to it (a budget of its own when none is given). Blocking and CPU-bound: call
    it from a worker thread. Only pypdf's errors become InvalidDocumentError: anything else is a bug
    and propagates as it is.
    """
    budget = budget if budget is not None else limits.request_budget()
    if budget.over_time():
        raise _too_slow(limits.seconds, None)
    allowance = min(reading_allowance(data), budget.inflation_left)
    try:
        # pypdf's limits, lowered to what an allowed document can need: bounded work and memory
        # before this module's own checks run.
        with (
            budget.reserve(min(reading_cost(data), budget.capacity)),
            budget.timed() as over_time,
            inflating(allowance) as inflation,
            apply_configuration(
                page_tree_maximum_entries=limits.max_pages + 1,
                page_tree_maximum_depth=32,
                maximum_declared_stream_length=len(data),
            ),
        ):
            try:
                return _read(data, limits, over_time)
            except PyPdfError:
                if inflation.exceeded:
                    raise InvalidDocumentError(
                        DocumentErrorKind.TOO_COMPLEX,
                        f"The PDF is larger inside than this service reads: its object and cross-reference "
                        f"streams may inflate to {allowance:,} bytes in all. Re-save it or split it.",
                    ) from None
                raise
            finally:
                budget.inflated(inflation.used)
    except LimitReachedError as exc:
        if "page tree" in str(exc):
            raise _too_many_pages(None, limits.max_pages) from None
        raise _malformed(exc) from None
    except RecursionError:
        raise InvalidDocumentError(DocumentErrorKind.MALFORMED, "The PDF nests objects too deeply.") from None
    except PyPdfError as exc:  # pypdf's documented errors: the file, not this service
        raise _malformed(exc) from None
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, AssertionError) as exc:
        if not _raised_in_pypdf(exc):
            raise  # ours: a bug, answered 500 and logged with its traceback
        raise _malformed(exc) from None


_PYPDF_DIR = os.path.dirname(pypdf.__file__) + os.sep


def _raised_in_pypdf(exc: BaseException) -> bool:
    """Whether `exc` was raised inside pypdf: pypdf failing on a corrupt file in a way it does not
    document (`/Length true` is a TypeError in pypdf 7.1) is the file's fault, and logged with pypdf's
    location so that it can be reported upstream; raised in this project's code, it is a bug."""
    traceback = exc.__traceback__
    while traceback is not None and traceback.tb_next is not None:
        traceback = traceback.tb_next
    if traceback is None or not traceback.tb_frame.f_code.co_filename.startswith(_PYPDF_DIR):
        return False
    where = traceback.tb_frame.f_code
    log.warning(
        "pypdf failed on a malformed document with an undocumented error",
        extra={"error": type(exc).__name__, "at": f"{where.co_filename[len(_PYPDF_DIR) :]}:{where.co_name}"},
    )
    return True


def _read(data: bytes, limits: DocumentLimits, over_time: Callable[[], bool]) -> Document:
    reader = PdfReader(io.BytesIO(data), strict=False)
    try:
        return _images_of(reader, limits, over_time)
    finally:
        _release(reader)


def _release(reader: PdfReader) -> None:
    """Break the reader's cycles (its objects refer to it, it caches them and its pages): reference
    counting then frees a document's objects as soon as it is read, instead of leaving hundreds of
    thousands to the cyclic collector, whose full passes over them paused every thread (the event loop
    included; BENCHMARKS.md, *One reading thread, and a document's objects freed as soon as it is
    read*). `resolved_objects` and `flattened_pages` are PdfReader's
    public attributes in pypdf 7.x."""
    reader.resolved_objects.clear()
    reader.flattened_pages = None


def _images_of(reader: PdfReader, limits: DocumentLimits, over_time: Callable[[], bool]) -> Document:
    if reader.is_encrypted:
        _decrypt(reader)
    pages = len(reader.pages)
    if pages > limits.max_pages:
        raise _too_many_pages(pages, limits.max_pages)
    document = Document(pages=pages)
    seen: dict[str, ImagePosition] = {}
    visits = [0]
    for page_number, page in enumerate(reader.pages):
        _check_time(over_time, limits.seconds, page_number)
        for index, stream in enumerate(_page_images(page, visits)):
            _check_time(over_time, limits.seconds, page_number)
            if len(document.images) >= limits.max_images:
                raise InvalidDocumentError(
                    DocumentErrorKind.TOO_MANY_IMAGES,
                    f"The PDF has more than {limits.max_images} images; the limit is "
                    f"MAX_IMAGES_PER_DOCUMENT={limits.max_images}. Split it and send the parts.",
                )
            document.images.append(_embedded(stream, ImagePosition(page_number, index), limits, seen))
    return document


def _check_time(over_time: Callable[[], bool], seconds: float, page: int) -> None:
    """The request's time budget, checked between pages and XObjects: each step is bounded by counts
    (pages, XObjects visited) and pypdf's work limits."""
    if over_time():
        raise _too_slow(seconds, page)


def _too_slow(seconds: float, page: int | None) -> InvalidDocumentError:
    where = f"it stopped at page {page}" if page is not None else "this one was not read"
    return InvalidDocumentError(DocumentErrorKind.TOO_SLOW, _too_slow_detail(seconds, where))


def too_slow_image(seconds: float) -> InvalidImageError:
    """A document's image reached after the request's time budget was spent: not decoded."""
    return InvalidImageError(ImageErrorKind.TOO_SLOW, _too_slow_detail(seconds, "this image was not decoded"))


def _too_slow_detail(seconds: float, where: str) -> str:
    return (
        f"The request's documents took more than {seconds:g} s of work to read and decode "
        f"(PDF_TIME_BUDGET_SECONDS); {where}. Send fewer or simpler documents per request."
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


def _page_images(page: DictionaryObject, visits: list[int]) -> Iterator[StreamObject]:
    """The image streams a page's resources name, forms' included, each once, in resource order.

    `visits` counts the XObjects looked at across the document: past MAX_XOBJECTS_VISITED the document
    is refused, so that no page (or pages sharing thousands of forms) can make this walk long."""
    seen: set[tuple[int, int] | int] = set()

    def walk(value: object, depth: int) -> Iterator[StreamObject]:
        resources = _resolved(value)
        if not isinstance(resources, DictionaryObject) or depth > MAX_FORM_DEPTH:
            return
        xobjects = _resolved(resources.get("/XObject"))
        if not isinstance(xobjects, DictionaryObject):
            return
        for value in xobjects.values():
            visits[0] += 1
            if visits[0] > MAX_XOBJECTS_VISITED:
                raise InvalidDocumentError(
                    DocumentErrorKind.TOO_COMPLEX,
                    f"The PDF's pages name more than {MAX_XOBJECTS_VISITED:,} images and forms in all; "
                    "a document of photos names a few a page. Split it or flatten its forms.",
                )
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
    nested = [0]
    detached = _detached(stream, max_pixels, [0], nested)
    assert isinstance(detached, StreamObject)
    samples = _inflated_size(stream, filters, width, height)
    plain = (
        filters in ([], ["/FlateDecode"])
        and _resolved(stream.get("/BitsPerComponent")) == 8
        and not any(key in stream for key in ("/SMask", "/Mask", "/Decode", "/ImageMask", "/DecodeParms"))
    )
    colour_space = _resolved(stream.get("/ColorSpace"))
    mode = _PLAIN_MODES.get(str(colour_space)) if plain and isinstance(colour_space, NameObject) else None
    return PdfRaster(detached, width, height, mode, samples + nested[0])


def _inflated_size(stream: StreamObject, filters: list[str], width: int, height: int) -> int:
    """What the image's stream may inflate to: its declared samples (a predictor's byte a row, and what
    a pass-through codec hands on, included), or InvalidImageError for a bomb (docs/decisions.md)."""
    bits = _resolved(stream.get("/BitsPerComponent"))
    bits = bits if isinstance(bits, int) and 1 <= bits <= 16 else 8
    if stream.get("/ImageMask") is True:
        components, bits = 1, 1
    else:
        components = _components(_resolved(stream.get("/ColorSpace")))
    declared = math.ceil(width * components * bits / 8) * height
    encoded = len(stream._data)
    samples = declared + height + encoded + 1024
    if any(name in _IMAGE_CODECS for name in filters):
        return samples  # a JPEG or JPEG 2000 file, bounded by its pixel count when decoded
    if declared > INFLATION_FLOOR and declared > MAX_INFLATION_RATIO * encoded:
        raise InvalidImageError(
            ImageErrorKind.DECOMPRESSION_BOMB,
            f"The embedded image is a decompression bomb: {encoded:,} stored bytes declare {declared:,} "
            f"bytes of samples ({width}x{height}), over {MAX_INFLATION_RATIO} times as much; photos "
            "compress a few times at most.",
        )
    slow = [name for name in filters if name in _SLOW_FILTERS] or (
        ["a predictor"] if _predicted(stream) else []
    )
    if slow and declared > SLOW_FILTER_BYTES:
        raise InvalidImageError(
            ImageErrorKind.TOO_MANY_PIXELS,
            f"The embedded image is stored with {slow[0]}, which is decoded slowly: at most "
            f"{SLOW_FILTER_BYTES >> 20} MiB of samples are decoded that way, and this one declares "
            f"{declared:,} bytes ({width}x{height}). Re-save the PDF with JPEG or Flate images.",
        )
    return samples


def _components(colour_space: object) -> int:
    """Samples per pixel of a colour space; 4 (the most of any common space) when unknown."""
    if isinstance(colour_space, NameObject):
        return _COMPONENTS.get(str(colour_space), 4)
    if isinstance(colour_space, ArrayObject) and colour_space:
        family = str(_resolved(colour_space[0]))
        if family == "/ICCBased" and len(colour_space) > 1:
            profile = _resolved(colour_space[1])
            count = _resolved(profile.get("/N")) if isinstance(profile, DictionaryObject) else None
            return count if isinstance(count, int) and 1 <= count <= 32 else 4
        if family == "/DeviceN" and len(colour_space) > 1:
            names = _resolved(colour_space[1])
            return len(names) if isinstance(names, ArrayObject) and 1 <= len(names) <= 32 else 4
        return _COMPONENTS.get(family, 4)
    return 4


def _predicted(stream: StreamObject) -> bool:
    """Whether a predictor (undone by pypdf in Python) applies to any of the stream's filters."""
    parameters = _resolved(stream.get("/DecodeParms"))
    entries = parameters if isinstance(parameters, ArrayObject) else [parameters]
    for entry in entries:
        entry = _resolved(entry)
        if isinstance(entry, DictionaryObject):
            predictor = _resolved(entry.get("/Predictor"))
            if isinstance(predictor, int) and predictor > 1:
                return True
    return False


def _filters(stream: StreamObject) -> list[str]:
    value = _resolved(stream.get("/Filter"))
    if value is None:
        return []
    if isinstance(value, ArrayObject):
        return [str(_resolved(item)) for item in value]
    return [str(value)]


def _detached(
    item: object, max_pixels: int | None, count: list[int], nested: list[int] | None = None
) -> object:
    """A copy of `item` with every indirect reference replaced by its object (a soft mask, a palette,
    an ICC profile): a stand-alone stream pypdf decodes without the reader. Images nested in it (masks)
    obey the pixel limit, and what they may inflate to is added to `nested`."""
    value = _resolved(item)
    count[0] += 1
    if count[0] > MAX_RESOLVED_OBJECTS:
        raise InvalidImageError(ImageErrorKind.CORRUPT, "The embedded image's dictionary is too large.")
    if isinstance(value, StreamObject):
        if count[0] > 1 and value.get("/Subtype") == "/Image" and max_pixels is not None:
            # a soft mask is an image too: it obeys the same limits
            size = (_int(value.get("/Width")), _int(value.get("/Height")))
            check_pixels(size, max_pixels)
            if nested is not None:
                nested[0] += _inflated_size(value, _filters(value), *size)
        copy: StreamObject = EncodedStreamObject() if "/Filter" in value else DecodedStreamObject()
        copy._data = value._data
        for key, item in value.items():
            copy[NameObject(key)] = _detached(item, max_pixels, count, nested)
        return copy
    if isinstance(value, DictionaryObject):
        result = DictionaryObject()
        for key, item in value.items():
            result[NameObject(key)] = _detached(item, max_pixels, count, nested)
        return result
    if isinstance(value, ArrayObject):
        return ArrayObject(_detached(item, max_pixels, count, nested) for item in value)
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


def _undecodable(exc: BaseException) -> InvalidImageError:
    reason = _reason(exc)
    return InvalidImageError(ImageErrorKind.CORRUPT, f"The embedded image cannot be decoded ({reason}).")


def _malformed(exc: BaseException) -> InvalidDocumentError:
    return InvalidDocumentError(
        DocumentErrorKind.MALFORMED, f"The PDF is malformed or truncated and cannot be read ({_reason(exc)})."
    )


def _reason(exc: BaseException) -> str:
    """A short, safe reason: the exception's type and the start of its message (never document bytes)."""
    message = str(exc).splitlines()[0][:120] if str(exc) else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
