"""RGB image to model input, driven by the model card, so training and serving share one code path."""

from __future__ import annotations

import numpy as np
from PIL import Image

from cats_dogs_other.models.card import Preprocessing

_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "bicubic": Image.Resampling.BICUBIC,
}


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
