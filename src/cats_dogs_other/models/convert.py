"""Keras -> ONNX + model card, so the course's model is served without Keras (or PyTorch) at run time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cats_dogs_other.models.card import ModelCard
from cats_dogs_other.models.errors import ModelLoadError
from cats_dogs_other.models.runners import KerasRunner
from cats_dogs_other.models.source import MlflowRegistry


def convert_keras(model_path: Path, out_dir: Path, threads: int = 1) -> ModelCard:
    """Export a .keras/.h5 model to `out_dir/model.onnx` with a card carrying its input contract."""
    runner = KerasRunner(model_path, threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "model.onnx"
    spec = runner.course_card(model_path.stem).preprocessing
    try:
        runner.run(np.zeros((1, spec.height, spec.width, 3), dtype=np.float32))  # export needs one call first
        runner.model.export(str(target), format="onnx", verbose=False)
    except Exception as exc:  # the exporter's errors are many and untyped
        raise ModelLoadError(f"Could not export {model_path} to ONNX: {str(exc)[:300]}") from exc
    import onnxruntime as ort

    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    card = runner.course_card(model_path.stem).model_copy(
        update={
            "input_name": session.get_inputs()[0].name,
            "output_name": session.get_outputs()[0].name,
            "training": {"converted_from": str(model_path), "converter": "keras.Model.export(format='onnx')"},
        }
    )
    card.save(out_dir / "model.json")
    json.loads((out_dir / "model.json").read_text())  # written and readable
    return card


def fetch_model(
    uri: str, out_dir: Path, cache_dir: Path | None = None, registry: MlflowRegistry | None = None
) -> Path:
    """Resolve a model URI (path or registry) into `out_dir` as ONNX + card: what a container image bakes in.

    A Keras model is converted on the way, so the image that serves it needs neither Keras nor PyTorch.
    """
    import shutil

    from cats_dogs_other.models.source import resolve_model

    source = resolve_model(uri, cache_dir, registry)
    out_dir.mkdir(parents=True, exist_ok=True)
    if source.kind == "keras":
        card = convert_keras(source.path, out_dir)
    else:
        shutil.copy(source.path, out_dir / "model.onnx")
        card = source.card or ModelCard()
    card = card.model_copy(update={"training": {**card.training, "fetched_from": source.describe()}})
    card.save(out_dir / "model.json")
    return out_dir / "model.onnx"
