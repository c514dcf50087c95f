"""Keras models built here (random weights, the course's input contract) and a real MLflow server."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported anywhere in the tests

import numpy as np
import pytest

COURSE_MEANS = np.array([123.68, 116.779, 103.939], dtype=np.float32)


def build_course_model(outputs: int = 3, activation: str = "sigmoid", seed: int = 7) -> Any:
    """A small stand-in for the course's VGG16 + Dense(3) network: same input, same kind of head."""
    import keras

    keras.utils.set_random_seed(seed)
    small = keras.initializers.RandomNormal(stddev=1e-3, seed=seed)
    inputs = keras.Input((224, 224, 3))
    x = keras.layers.Conv2D(8, 8, strides=8, kernel_initializer=small)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs_layer = keras.layers.Dense(outputs, activation=activation, kernel_initializer="glorot_uniform")(x)
    return keras.Model(inputs, outputs_layer)


def course_predict(model: Any, path: Path) -> np.ndarray:
    """The course's own inference code: load_img (nearest, 224x224), minus the channel means, predict."""
    import keras

    image = keras.utils.load_img(str(path), target_size=(224, 224))
    array = keras.utils.img_to_array(image) - COURSE_MEANS
    return np.asarray(model.predict(array[np.newaxis], verbose=0))[0]


@pytest.fixture(scope="session")
def course_model() -> Any:
    return build_course_model()


@pytest.fixture(scope="session")
def keras_files(course_model: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("keras")
    files = {"keras": folder / "final_model.keras", "h5": folder / "final_model.h5"}
    course_model.save(str(files["keras"]))
    course_model.save(str(files["h5"]))
    return files
