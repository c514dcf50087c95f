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


def thumbnail_jpeg(image: Image.Image, side: int = THUMBNAIL_SIDE) -> bytes:
    """A small JPEG of a decoded image (a few KiB): what a person sees beside the model's answer, in the
    proportions of the image sent (a decode may have reduced its axes by different factors)."""
    aspect = image.info.get(ASPECT_INFO, image.width / image.height)
    longest = min(side, max(image.size))
    size = (longest, round(longest / aspect)) if aspect >= 1 else (round(longest * aspect), longest)
    small = image.resize((max(1, size[0]), max(1, size[1])), Image.Resampling.BILINEAR, reducing_gap=2.0)
    out = io.BytesIO()
    small.save(out, "JPEG", quality=80)
    return out.getvalue()


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
