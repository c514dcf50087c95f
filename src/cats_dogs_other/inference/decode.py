"""Bytes to an upright RGB image no larger than the model needs, or one clear error.

Content is sniffed from the bytes (Pillow's format detection), never taken from a file name or header.
Memory is bounded before anything is decoded:
- the pixel count is checked from the header, so a small file that declares a huge canvas costs nothing;
- a JPEG is decoded at a reduced scale (libjpeg's draft mode) when it is much larger than the model input;
- the bytes the decoded pixels will take (`decode_cost`) are reserved from a `MemoryBudget` shared by all
  decode threads, and an image that alone would exceed it is refused;
- only the decoded raster is ever full size: it is reduced by an integer box filter to no less than
  `min_side` per axis, and mode conversion, transparency, 16-bit scaling and EXIF orientation are
  applied strip by strip or after reducing, so no second full-size copy exists.
"""

from __future__ import annotations

import io
import math
import re
import struct
import warnings
from contextlib import AbstractContextManager, nullcontext
from enum import StrEnum

import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from cats_dogs_other.inference.budget import MemoryBudget, RequestBudget
from cats_dogs_other.inference.limits import (
    DECODER_WORKSPACE_BYTES,
    DEFAULT_MAX_PIXELS,
    RASTER_BYTES_PER_PIXEL,
    STRIP_BYTES_PER_PIXEL,
    STRIP_PIXELS,
)


def _heif_plugin() -> bool:
    """HEIC/HEIF (iPhones' default) through pi-heif, the decode-only build of pillow-heif, when the
    optional extra `heic` is installed: its wheels bundle LGPL libheif and libde265, and HEVC is
    patent-encumbered, so whoever distributes the service opts in (docs/decisions.md)."""
    try:
        from pi_heif import register_heif_opener
    except ImportError:
        return False
    # One decode thread per image: the service decodes images in parallel already. Thumbnails, depth and
    # auxiliary images are never used.
    register_heif_opener(decode_threads=1, thumbnails=False, depth_images=False, aux_images=False)
    return True


HEIF_EXTRA = "heic"
HEIF_AVAILABLE = _heif_plugin()
# What cameras, browsers and phones produce (JPEG covers MPO); Pillow also reads PDF, EPS, ICO...: refused.
SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "AVIF", *(("HEIF",) * HEIF_AVAILABLE), "GIF", "BMP", "TIFF")
_SHOWN_NAMES = {"WEBP": "WebP", "HEIF": "HEIC"}
_NAMES = [_SHOWN_NAMES.get(name, name) for name in SUPPORTED_FORMATS]
# "JPEG, PNG, WebP, AVIF, GIF, BMP or TIFF": for messages and the API's documentation.
SUPPORTED_FORMATS_TEXT = f"{', '.join(_NAMES[:-1])} or {_NAMES[-1]}" + (
    "" if HEIF_AVAILABLE else f" (HEIC with the optional extra `{HEIF_EXTRA}`)"
)
UNSUPPORTED_DETAIL = f"Not a supported image: expected {', '.join(_NAMES[:-1])} or {_NAMES[-1]} content."
HEIF_UNAVAILABLE_DETAIL = (
    "This is a HEIC/HEIF image (an iPhone's default format), which this installation cannot decode: "
    f"install the optional extra `{HEIF_EXTRA}` (pip install 'cats-dogs-other[{HEIF_EXTRA}]'), or send "
    "the photo as JPEG."
)
# ISO base media files name their kind in the `ftyp` box: HEVC-coded HEIF brands (AVIF is `avif`/`avis`).
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"})
# libwebp decodes into a buffer of its own before Pillow copies it; libtiff reads a whole strip or tile,
# which may be the whole image: both hold the pixels twice.
DOUBLE_BUFFERED_FORMATS = frozenset({"WEBP", "TIFF"})
# AV1 and HEVC decoders keep their YUV planes (16-bit samples past 8 bits) and libavif or libheif
# converts them into an RGB buffer of its own, which Pillow then copies into its raster: 10 bytes per
# pixel reserved in all, above the peaks measured from 8-bit 4:2:0 to 10-bit 4:4:4 (BENCHMARKS.md,
# *What each decoder holds*).
EXTRA_BYTES_PER_PIXEL = {"AVIF": 6, "HEIF": 6}
# libwebp's animation decoder keeps two canvases from Image.open on, then Pillow copies the frame out as
# bytes and into its raster: four copies of 4 bytes per pixel (BENCHMARKS.md, *What each decoder holds*).
WEBP_BYTES_PER_PIXEL = 16
# PNG text chunks are decompressed inside Image.open, before any reservation: Pillow allows 64 MiB of
# them per image, which a file of a few KB can claim. This service reads no PNG text; 4 MiB in all is
# plenty for the metadata cameras write, and the per-chunk cap (1 MiB) still admits ICC profiles.
# Pillow documents both as settings of its PNG plugin; they are process-wide, which is what this
# service wants.
PngImagePlugin.MAX_TEXT_MEMORY = 4 << 20


ORIENTATION_TAG = 0x0112
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = frozenset({5, 6, 7, 8})
# Width / height of the image before `reduced_rgb` reduced each axis by its own factor: what a person
# should see (a thumbnail), while the model is fed the reduced raster (it is resized to its input anyway).
ASPECT_INFO = "cats_dogs_other.aspect"
# Width x height of the image as sent (before draft decoding or reducing): what the service reports of
# the images it is sent (`cdo_image_pixels`), since the decoded raster is smaller.
SOURCE_PIXELS_INFO = "cats_dogs_other.source_pixels"
_SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_WIDE = _SIXTEEN_BIT | {"I", "F"}
_WITH_ALPHA = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})


class ImageErrorKind(StrEnum):
    EMPTY = "empty"
    UNSUPPORTED = "unsupported"
    CORRUPT = "corrupt"
    TOO_MANY_PIXELS = "too_many_pixels"
    DECOMPRESSION_BOMB = "decompression_bomb"
    TOO_SLOW = "too_slow"


class InvalidImageError(ValueError):
    """The one error bad image input raises: `kind` names the broken rule, the message explains it."""

    def __init__(self, kind: ImageErrorKind, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.index = index  # the image's position among a request's images, once the engine knows it

    def at(self, index: int) -> InvalidImageError:
        return InvalidImageError(self.kind, str(self), index)

    def detached(self) -> InvalidImageError:
        """This error with only its kind and message, and this one stripped of its traceback and cause.

        Raised out of a worker thread's future, an error sits in a reference cycle (traceback → frame →
        future → error) that only the cyclic collector frees; meanwhile its traceback and cause hold the
        failed decode's frames: up to 4 MiB of PNG text, partial pixels. Sixteen such files in one
        /predict held 1 GiB until a collection; stripped, reference counting frees it all at once.
        """
        self.__traceback__ = None
        self.__cause__ = self.__context__ = None
        return InvalidImageError(self.kind, str(self), self.index)


def decode_image(
    data: bytes,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int | None = None,
    budget: MemoryBudget | RequestBudget | None = None,
) -> Image.Image:
    """Decode the first frame of an image file into an upright 8-bit RGB image.

    `min_side` (pass twice the model input's longer side) lets a large image be decoded or reduced to
    no less than that many pixels per axis; the model's antialiased resize comes afterwards, so its
    input barely changes. Without it the image keeps its full size.
    """
    if not data:
        raise InvalidImageError(ImageErrorKind.EMPTY, "The file is empty (0 bytes).")
    webp_size = _webp_size(data)
    if webp_size is not None:
        # libwebp allocates its canvas inside Image.open: check and reserve before opening.
        check_pixels(webp_size, max_pixels)
        cost = _fixed_cost(webp_size, webp_size[0] * webp_size[1] * WEBP_BYTES_PER_PIXEL)
        with _reserved(budget, cost, webp_size, "WebP"):
            return _with_source_pixels(_decode(_open(data, max_pixels), min_side, max_pixels), webp_size)
    image = _open(data, max_pixels)
    declared = source = image.size
    try:
        if image.format == "HEIF":
            # Pillow is told the size after cropping (`clap`); the decoder allocates the coded size first.
            declared = max(source, *_heif_coded_sizes(data), key=lambda size: size[0] * size[1])
            check_pixels(declared, max_pixels)
        image.seek(0)
        if min_side is not None and image.format == "JPEG":
            image.draft(None, (min_side, min_side))
        cost = decode_cost(image, declared)
    except BaseException:
        image.close()
        raise
    shown = declared if image.format == "HEIF" else image.size
    with _reserved(budget, cost, shown, str(image.format)):
        return _with_source_pixels(_decode(image, min_side, max_pixels), source)


def _with_source_pixels(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    image.info[SOURCE_PIXELS_INFO] = size[0] * size[1]
    return image


def decode_cost(image: Image.Image, declared: tuple[int, int]) -> int:
    """Bytes decoding this opened (and possibly drafted) image holds at its peak: its raster, a second
    copy for decoders that keep one, libjpeg's full-size coefficients for a progressive JPEG (kept
    whatever the draft scale), strip temporaries and the decoder's own workspace. For HEIF, `declared`
    is the largest coded size in the file, which libheif decodes before cropping."""
    width, height = declared if image.format == "HEIF" else image.size
    raster = width * height * RASTER_BYTES_PER_PIXEL
    if image.format in DOUBLE_BUFFERED_FORMATS:
        raster *= 2
    raster += width * height * EXTRA_BYTES_PER_PIXEL.get(str(image.format), 0)
    if image.format == "JPEG" and image.info.get("progressive"):
        raster += _jpeg_coefficient_bytes(image, declared)
    return _fixed_cost((width, height), raster)


def _fixed_cost(size: tuple[int, int], raster: int) -> int:
    return raster + min(size[0] * size[1], STRIP_PIXELS) * STRIP_BYTES_PER_PIXEL + DECODER_WORKSPACE_BYTES


def _jpeg_coefficient_bytes(image: Image.Image, declared: tuple[int, int]) -> int:
    """A progressive JPEG keeps every DCT coefficient (int16) of every component, at full size."""
    layers = getattr(image, "layer", None) or [("", 1, 1, 0)] * len(image.getbands())
    h_max = max(layer[1] for layer in layers)
    v_max = max(layer[2] for layer in layers)
    total = 0
    for _, h, v, _ in layers:
        columns = math.ceil(math.ceil(declared[0] * h / h_max) / 8) * 8
        rows = math.ceil(math.ceil(declared[1] * v / v_max) / 8) * 8
        total += columns * rows * 2
    return total


def _reserved(
    budget: MemoryBudget | RequestBudget | None, cost: int, size: tuple[int, int], kind: str
) -> AbstractContextManager[None]:
    if budget is None:
        return nullcontext()
    if cost > budget.capacity:
        raise InvalidImageError(
            ImageErrorKind.TOO_MANY_PIXELS,
            f"The image is too large to decode ({size[0]}x{size[1]} {kind}): it needs about "
            f"{cost / 1e6:,.0f} MB, over the decoding budget of {budget.capacity / 1e6:,.0f} MB.",
        )
    return budget.reserve(cost)


def _decode(image: Image.Image, min_side: int | None, max_pixels: int) -> Image.Image:
    """Load the opened image, reduce and convert it, and turn it upright; closes it."""
    width, height = image.size
    result = None
    try:
        image.load()
        orientation = image.getexif().get(ORIENTATION_TAG)
        rgb = reduced_rgb(image, min_side)
        method = _UPRIGHT.get(orientation) if isinstance(orientation, int) else None
        result = rgb.transpose(method) if method is not None else rgb
        if orientation in _SWAPS_AXES:
            result.info[ASPECT_INFO] = 1 / rgb.info[ASPECT_INFO]
        return result
    except Image.DecompressionBombError as exc:
        raise _too_many_pixels(width * height, max_pixels, (width, height)) from exc
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error, RuntimeError) as exc:
        # RuntimeError: libheif's errors, as pi-heif raises them.
        raise InvalidImageError(
            ImageErrorKind.CORRUPT, f"The {image.format} image is corrupt or truncated and cannot be decoded."
        ) from exc
    finally:
        if result is not image:  # an RGB image that needed no change is returned as it was decoded
            image.close()


def _webp_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a WebP's RIFF header (VP8X, VP8L or VP8 chunk), without decoding."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    raise InvalidImageError(ImageErrorKind.CORRUPT, "The WebP image's header is corrupt.")


def _open(data: bytes, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Pillow warns (rather than raises) between 1x and 2x its own bomb limit; ours is checked below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
    except Image.DecompressionBombError as exc:
        # Pillow's own guard (far above ours) fired while reading the header; its message has the count.
        declared = re.search(r"\((\d+) pixels\)", str(exc))
        raise _too_many_pixels(int(declared.group(1)) if declared else None, max_pixels) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        heif_refused = not HEIF_AVAILABLE and is_heif(data)
        raise InvalidImageError(
            ImageErrorKind.UNSUPPORTED, HEIF_UNAVAILABLE_DETAIL if heif_refused else UNSUPPORTED_DETAIL
        ) from exc
    try:
        check_pixels(image.size, max_pixels)
    except InvalidImageError:
        image.close()
        raise
    return image


def is_heif(data: bytes) -> bool:
    """An HEVC-coded HEIF file (HEIC), by its `ftyp` box's major or compatible brands."""
    if data[4:8] != b"ftyp" or len(data) < 16:
        return False
    box_size = min(int.from_bytes(data[:4], "big"), len(data), 256)
    brands = [data[8:12], *(data[i : i + 4] for i in range(16, box_size - 3, 4))]
    return any(brand in _HEIF_BRANDS for brand in brands)


def _heif_coded_sizes(data: bytes) -> list[tuple[int, int]]:
    """Every `ispe` (image spatial extent) property in an HEIF file's `meta` box: the coded size of each
    image, tile or thumbnail, which libheif decodes at before cropping to what Pillow is told."""
    meta = _top_level_box(data, b"meta")
    sizes = []
    at = meta.find(b"\x00\x00\x00\x14ispe")  # a 20-byte box: header, version and flags, width, height
    while at >= 0 and at + 20 <= len(meta):
        sizes.append(
            (int.from_bytes(meta[at + 12 : at + 16], "big"), int.from_bytes(meta[at + 16 : at + 20], "big"))
        )
        at = meta.find(b"\x00\x00\x00\x14ispe", at + 8)
    return sizes


def _top_level_box(data: bytes, kind: bytes) -> bytes:
    """The body of the first top-level ISO BMFF box of `kind`, or nothing."""
    at = 0
    while at + 8 <= len(data):
        size, found = int.from_bytes(data[at : at + 4], "big"), data[at + 4 : at + 8]
        header = 8
        if size == 1 and at + 16 <= len(data):
            size, header = int.from_bytes(data[at + 8 : at + 16], "big"), 16
        elif size == 0:
            size = len(data) - at
        if size < header:
            return b""
        if found == kind:
            return data[at + header : at + size]
        at += size
    return b""


def check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise _too_many_pixels(width * height, max_pixels, (width, height))
    if width == 0 or height == 0:
        raise InvalidImageError(ImageErrorKind.CORRUPT, "The image has no pixels.")


def _too_many_pixels(
    pixels: int | None, max_pixels: int, size: tuple[int, int] | None = None
) -> InvalidImageError:
    dimensions = f"{size[0]}x{size[1]} = " if size else ""
    declared = f" ({dimensions}{pixels:,} pixels)" if pixels else ""
    return InvalidImageError(
        ImageErrorKind.TOO_MANY_PIXELS,
        f"The image is too large{declared}: the limit is {max_pixels:,} pixels.",
    )


def reduced_rgb(image: Image.Image, min_side: int | None) -> Image.Image:
    """The loaded image as RGB, box-reduced per axis by the largest integer factor that keeps `min_side`.

    Converting strip by strip and reducing each strip gives exactly the pixels of converting the whole
    image and then reducing it (strips are whole multiples of the vertical factor).
    """
    width, height = image.size
    fx = max(1, width // min_side) if min_side else 1
    fy = max(1, height // min_side) if min_side else 1
    top = _sixteen_bit_top(image)
    if fx == fy == 1:
        reduced = to_rgb(image, top)
    elif image.mode in {"RGB", "L"}:  # no conversion needed at full size: reduce the raster directly
        reduced = to_rgb(image.reduce((fx, fy)), top)
    else:
        reduced = Image.new("RGB", (math.ceil(width / fx), math.ceil(height / fy)))
        rows = fy * max(1, STRIP_PIXELS // (width * fy))
        for y in range(0, height, rows):
            strip = to_rgb(image.crop((0, y, width, min(height, y + rows))), top)
            reduced.paste(strip.reduce((fx, fy)), (0, y // fy))
    reduced.info[ASPECT_INFO] = width / height
    return reduced


def _sixteen_bit_top(image: Image.Image) -> float:
    """The value that maps to white for 16-bit, 32-bit and float images (from the whole image)."""
    if image.mode in _SIXTEEN_BIT:
        return 65535.0
    if image.mode in {"I", "F"}:
        extrema = image.getextrema()
        highest = extrema[1] if isinstance(extrema, tuple) else 0
        return 65535.0 if float(highest) > 255 else 255.0  # type: ignore[arg-type]
    return 255.0


def to_rgb(image: Image.Image, top: float = 255.0) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: transparency over white, 16-bit and float scaled rather than clipped."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _WIDE:
        values = np.asarray(image, dtype=np.float32)
        gray = np.clip(values * np.float32(255.0 / top) + np.float32(0.5), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if (mode == "P" and "transparency" in image.info) or mode in _WITH_ALPHA:
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")
