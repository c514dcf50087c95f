"""Bytes to an upright RGB image, or one clear error.

Content is sniffed from the bytes (Pillow's format detection), never taken from a file name or header.
The pixel count is checked from the header, before any pixel is decoded, so a small file that declares a
huge canvas costs nothing.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
from enum import StrEnum

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# What cameras, browsers and phones produce (JPEG covers MPO); Pillow also reads PDF, EPS, ICO...: refused.
SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
DEFAULT_MAX_PIXELS = 40_000_000


class ImageErrorKind(StrEnum):
    EMPTY = "empty"
    UNSUPPORTED = "unsupported"
    CORRUPT = "corrupt"
    TOO_MANY_PIXELS = "too_many_pixels"


class InvalidImageError(ValueError):
    """The one error bad image input raises: `kind` names the broken rule, the message explains it."""

    def __init__(self, kind: ImageErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def decode_image(
    data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, draft_size: tuple[int, int] | None = None
) -> Image.Image:
    """Decode the first frame of an image file into an upright 8-bit RGB image.

    `draft_size` lets a JPEG decode at a reduced scale no smaller than that size: decoding a 12-megapixel
    photo at 1/4 or 1/8 scale is several times faster, and since the image is downsampled with antialiasing
    afterwards, the model input barely changes. Pass at least twice the model's input size.
    """
    if not data:
        raise InvalidImageError(ImageErrorKind.EMPTY, "The file is empty (0 bytes).")
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
        raise InvalidImageError(
            ImageErrorKind.UNSUPPORTED,
            "Not a supported image: expected JPEG, PNG, WebP, GIF, BMP or TIFF content.",
        ) from exc
    width, height = image.size
    if width * height > max_pixels:
        raise _too_many_pixels(width * height, max_pixels, (width, height))
    if width == 0 or height == 0:
        raise InvalidImageError(ImageErrorKind.CORRUPT, "The image has no pixels.")
    try:
        image.seek(0)
        if draft_size is not None and image.format == "JPEG":
            image.draft(None, draft_size)
        image.load()
        upright = ImageOps.exif_transpose(image)
        return _to_rgb(upright)
    except Image.DecompressionBombError as exc:
        raise _too_many_pixels(width * height, max_pixels, (width, height)) from exc
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error) as exc:
        raise InvalidImageError(
            ImageErrorKind.CORRUPT, f"The {image.format} image is corrupt or truncated and cannot be decoded."
        ) from exc
    finally:
        image.close()


def _too_many_pixels(
    pixels: int | None, max_pixels: int, size: tuple[int, int] | None = None
) -> InvalidImageError:
    dimensions = f"{size[0]}x{size[1]} = " if size else ""
    declared = f" ({dimensions}{pixels:,} pixels)" if pixels else ""
    return InvalidImageError(
        ImageErrorKind.TOO_MANY_PIXELS,
        f"The image is too large{declared}: the limit is {max_pixels:,} pixels.",
    )


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: transparency over white, 16-bit and float scaled rather than clipped."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}:
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        gray = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if (mode == "P" and "transparency" in image.info) or mode in {"LA", "La", "PA", "RGBa"}:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode == "RGBA":
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")
