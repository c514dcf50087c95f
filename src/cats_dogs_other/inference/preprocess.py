"""RGB image to model input, driven by the model card, so training and serving share one code path."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from cats_dogs_other.inference.decode import ASPECT_INFO
from cats_dogs_other.models.card import Preprocessing

_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "bicubic": Image.Resampling.BICUBIC,
}


THUMBNAIL_SIDE = 128  # pixels, the longer side; a page shows it at about 100 CSS pixels
# Feedback images are kept as training data at the size of the course's images (107 to 500 px a side):
# twice the model's input, enough for any crop or augmentation a retraining applies.
TRAINING_IMAGE_SIDE = 512


def in_proportion(image: Image.Image, side: int) -> Image.Image:
    """A decoded image with its longer side at most `side`, in the proportions of the image sent (a
    decode may have reduced its axes by different factors)."""
    aspect = image.info.get(ASPECT_INFO, image.width / image.height)
    longest = min(side, max(image.size))
    size = (longest, round(longest / aspect)) if aspect >= 1 else (round(longest * aspect), longest)
    return image.resize((max(1, size[0]), max(1, size[1])), Image.Resampling.BILINEAR, reducing_gap=2.0)


def thumbnail_jpeg(image: Image.Image, side: int = THUMBNAIL_SIDE) -> bytes:
    """A small JPEG of a decoded image (a few KiB): what a person sees beside the model's answer."""
    out = io.BytesIO()
    in_proportion(image, side).save(out, "JPEG", quality=80)
    return out.getvalue()


def training_png(image: Image.Image, side: int = TRAINING_IMAGE_SIDE) -> tuple[bytes, int, int]:
    """A decoded image as training data: upright RGB PNG, no metadata (no EXIF, no location), the
    longer side at most `side`; with its width and height."""
    small = in_proportion(image, side)
    small.info.clear()
    out = io.BytesIO()
    small.save(out, "PNG", optimize=False, compress_level=6)
    return out.getvalue(), small.width, small.height


def to_input_array(image: Image.Image, spec: Preprocessing) -> np.ndarray:
    """One image as an HWC or CHW array (no batch axis) of the card's dtype."""
    size = (spec.width, spec.height)
    if image.size != size:
        image = image.resize(size, _RESAMPLE[spec.resample])
    pixels = np.asarray(image, dtype=np.uint8)
    if spec.dtype == "uint8":
        array: np.ndarray = pixels
    else:
        array = pixels.astype(np.float32)
        if spec.mean is not None:
            array -= np.asarray(spec.mean, dtype=np.float32)
        if spec.std is not None:
            array /= np.asarray(spec.std, dtype=np.float32)
    if spec.layout == "NCHW":
        array = np.ascontiguousarray(array.transpose(2, 0, 1))
    return array
