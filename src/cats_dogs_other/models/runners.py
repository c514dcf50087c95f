"""Model runners: the one thing that differs between an ONNX file and a Keras file, or between ONNX
Runtime and OpenVINO for the same ONNX file, is how to run a batch."""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from cats_dogs_other.models.card import DEFAULT_LABELS, ModelCard, Preprocessing
from cats_dogs_other.models.errors import ModelLoadError

# The course's preprocessing: keras.utils.load_img(path, target_size=(224, 224)) resizes the whole image
# with nearest-neighbour sampling; the model then gets RGB float32 minus the ImageNet channel means.
COURSE_MEANS = (123.68, 116.779, 103.939)


# The runtimes an ONNX model can run on. "auto" takes the first one installed, in the order measured
# fastest in the service (BENCHMARKS.md, *Runtimes*): ONNX Runtime answered as many requests a second
# as OpenVINO and held 100 MiB less, though OpenVINO runs the model alone faster at batch 4 and more.
Runtime = Literal["onnxruntime", "openvino"]
RUNTIMES: tuple[Runtime, ...] = ("onnxruntime", "openvino")


def installed_runtimes() -> list[Runtime]:
    """The runtimes importable here, in `auto`'s order (OpenVINO is the `openvino` extra)."""
    return [runtime for runtime in RUNTIMES if _importable(runtime)]


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a module blocked in sys.modules, a broken install
        return False


def choose_runtime(wanted: Runtime | Literal["auto"]) -> Runtime:
    if wanted != "auto":
        return wanted
    installed = installed_runtimes()
    return installed[0] if installed else "onnxruntime"


class ModelRunner(Protocol):
    # How many `run` calls may go on at once, each on its own threads (the engine runs that many).
    parallel_calls: int
    runtime: str  # what runs the model, as /version reports it

    def run(self, batch: np.ndarray) -> np.ndarray: ...

    def output_width(self) -> int | None: ...


class OnnxRunner:
    """One ONNX Runtime session, run from `threads // threads_per_call` threads at once.

    One thread per call, calls side by side, is the default: one call on two threads spends CPU
    synchronising its threads at every layer, two one-thread calls at once do not, even at batch 1
    (BENCHMARKS.md, *Where the time goes*). An ONNX Runtime session may be run from several threads.
    """

    runtime = "onnxruntime"

    def __init__(self, path: Path, card: ModelCard, threads: int, threads_per_call: int = 1) -> None:
        import onnxruntime as ort

        per_call = max(1, min(threads_per_call, threads))
        self.parallel_calls = max(1, threads // per_call)
        options = ort.SessionOptions()
        options.intra_op_num_threads = per_call
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle ORT threads would otherwise spin for a while, burning the cores decoding needs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own untyped errors for every kind of bad file
            raise ModelLoadError(f"{path} is not a loadable ONNX model: {exc}") from exc
        inputs = {i.name for i in self._session.get_inputs()}
        self._outputs = {o.name: o for o in self._session.get_outputs()}
        if card.input_name not in inputs:
            raise ModelLoadError(
                f"The model has no input named {card.input_name!r} (it has "
                f"{sorted(inputs)}); fix input_name in its model card."
            )
        if card.output_name not in self._outputs:
            raise ModelLoadError(
                f"The model has no output named {card.output_name!r} (it has "
                f"{sorted(self._outputs)}); fix output_name in its model card."
            )
        self._input, self._output = card.input_name, card.output_name

    def run(self, batch: np.ndarray) -> np.ndarray:
        (scores,) = self._session.run([self._output], {self._input: batch})
        return np.asarray(scores, dtype=np.float32)

    def output_width(self) -> int | None:
        width = self._outputs[self._output].shape[-1]
        return width if isinstance(width, int) else None


class OpenVinoRunner:
    """The same ONNX file compiled by OpenVINO for the CPU: one stream per call that may run at once,
    `threads // threads_per_call` of them, each call on its calling thread's own infer request.

    The model alone runs faster than on ONNX Runtime from batch 4 on (the same at batch 1), but in the
    service it answered no more requests and held ~100 MiB more (BENCHMARKS.md, *Runtimes*): opt-in.
    Threads are not pinned to cores: the pod shares them with decoding.
    """

    runtime = "openvino"

    def __init__(self, path: Path, card: ModelCard, threads: int, threads_per_call: int = 1) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise ModelLoadError(
                "INFERENCE_RUNTIME=openvino needs the `openvino` extra: "
                "pip install 'cats-dogs-other[openvino]' (or an image built with EXTRAS=openvino)."
            ) from exc
        per_call = max(1, min(threads_per_call, threads))
        self.parallel_calls = max(1, threads // per_call)
        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except RuntimeError as exc:  # what OpenVINO raises for a file it cannot read; our bugs propagate
            raise ModelLoadError(f"{path} is not a loadable ONNX model (OpenVINO): {exc}") from exc
        inputs = {name for port in model.inputs for name in port.get_names()}
        outputs = {name for port in model.outputs for name in port.get_names()}
        if card.input_name not in inputs:
            raise ModelLoadError(
                f"The model has no input named {card.input_name!r} (it has {sorted(inputs)}); "
                "fix input_name in its model card."
            )
        if card.output_name not in outputs:
            raise ModelLoadError(
                f"The model has no output named {card.output_name!r} (it has {sorted(outputs)}); "
                "fix output_name in its model card."
            )
        config = {
            "INFERENCE_NUM_THREADS": per_call * self.parallel_calls,
            "NUM_STREAMS": self.parallel_calls,
            "ENABLE_CPU_PINNING": False,
            # float32, as the model was validated: OpenVINO would pick bfloat16 on CPUs that have it,
            # which was no faster for the int8 default model and moves a float model's values.
            "INFERENCE_PRECISION_HINT": "f32",
        }
        try:
            self._compiled = core.compile_model(model, "CPU", config)
        except RuntimeError as exc:  # an operator OpenVINO lacks, a shape it cannot compile
            raise ModelLoadError(f"OpenVINO cannot compile {path}: {str(exc)[:500]}") from exc
        self._input, self._output = card.input_name, card.output_name
        self._width = self._compiled.output(self._output).get_partial_shape()[-1]
        self._requests = threading.local()  # an infer request runs one call at a time

    def run(self, batch: np.ndarray) -> np.ndarray:
        request = getattr(self._requests, "request", None)
        if request is None:
            request = self._requests.request = self._compiled.create_infer_request()
        outputs = request.infer({self._input: batch})
        # A copy: the request reuses its output buffer on its next call.
        return np.array(outputs[self._compiled.output(self._output)], dtype=np.float32)

    def output_width(self) -> int | None:
        return self._width.get_length() if self._width.is_static else None


def onnx_runner(
    runtime: Runtime | Literal["auto"], path: Path, card: ModelCard, threads: int, threads_per_call: int = 1
) -> OnnxRunner | OpenVinoRunner:
    """The ONNX file on the wanted runtime ("auto": the fastest installed)."""
    if choose_runtime(runtime) == "openvino":
        return OpenVinoRunner(path, card, threads, threads_per_call)
    return OnnxRunner(path, card, threads, threads_per_call)


class KerasRunner:
    """A .keras or .h5 file run by Keras 3 on the PyTorch backend (already used for training)."""

    parallel_calls = 1  # PyTorch's thread pool is the process's: one call at a time, on every thread
    runtime = "keras"

    def __init__(self, path: Path, threads: int) -> None:
        os.environ.setdefault("KERAS_BACKEND", "torch")
        try:
            import keras
        except ImportError as exc:
            raise ModelLoadError(
                "Serving a Keras file needs the `keras` extra: pip install 'cats-dogs-other[keras]' "
                "(or convert it to ONNX once: cats-dogs-other convert MODEL --out DIR)."
            ) from exc
        try:
            import torch

            torch.set_num_threads(threads)
        except ImportError:
            pass
        try:
            self.model: Any = keras.saving.load_model(str(path), compile=False)
        except Exception as exc:  # Keras raises many types for broken or foreign files
            raise ModelLoadError(f"{path} is not a loadable Keras model: {str(exc)[:300]}") from exc

    def run(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(batch, verbose=0), dtype=np.float32)

    def output_width(self) -> int | None:
        width = self.model.output_shape[-1]
        return width if isinstance(width, int) else None

    def course_card(self, name: str) -> ModelCard:
        """A card for a Keras model that came without one: the course's input contract and labels."""
        _, height, width, _ = self.model.input_shape
        activation = getattr(getattr(self.model.layers[-1], "activation", None), "__name__", "")
        return ModelCard(
            name=name,
            labels=list(DEFAULT_LABELS),
            outputs_are_probabilities=activation == "softmax",
            preprocessing=Preprocessing(
                height=height or 224,
                width=width or 224,
                resample="nearest",
                layout="NHWC",
                dtype="float32",
                mean=COURSE_MEANS,
                in_graph=f"the Keras model as saved (last activation: {activation or '?'})",
            ),
        )
