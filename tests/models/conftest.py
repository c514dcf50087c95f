"""Keras models built here (random weights, the course's input contract) and a real MLflow server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported anywhere in the tests

import httpx
import numpy as np
import pytest

from tests.servers import free_port

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


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` on loopback: SQLite backend store, local artifact store; stopped at the end."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (root / "server.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{root}/mlflow.db",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=root,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"mlflow server did not start:\n{(root / 'server.log').read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
