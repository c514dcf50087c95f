"""The model alone on each runtime (INFERENCE_RUNTIME): milliseconds per image by batch size and threads,
OpenVINO as the service runs it (float32) and in bfloat16 (its own default on CPUs that have it), and how
far the two runtimes' values are apart on the course's images.

    .venv/bin/python benchmarks/runtimes.py [--model PATH] [--rounds 60]

The same ONNX file and the same random uint8 input on both; each configuration in its own session or
compiled model, warmed up, then the median of `--rounds` calls. Prints Markdown for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cats_dogs_other.inference.classifier import ImageClassifier  # noqa: E402
from cats_dogs_other.models.card import ModelCard  # noqa: E402
from cats_dogs_other.models.runners import OnnxRunner, OpenVinoRunner  # noqa: E402
from inference import DEFAULT_IMAGES  # noqa: E402
from machine import describe  # noqa: E402

DEFAULT_MODEL = HERE.parent / "src" / "cats_dogs_other" / "models" / "default" / "model.onnx"
SETUPS = [(1, 1), (4, 1), (8, 1), (8, 2)]  # (batch, threads)


def per_image_ms(run: Callable[[np.ndarray], object], batch: int, rounds: int) -> float:
    x = np.random.default_rng(0).integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8)
    for _ in range(5):
        run(x)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - started)
    return statistics.median(times) / batch * 1000


def openvino_bf16(model: Path, card: ModelCard, threads: int) -> Callable[[np.ndarray], object]:
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": "bf16"}
    compiled = core.compile_model(core.read_model(str(model)), "CPU", config)
    request = compiled.create_infer_request()
    return lambda x: request.infer({card.input_name: x})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    args = parser.parse_args()
    card = (
        ModelCard.load(args.model.with_suffix(".json"))
        if args.model.with_suffix(".json").exists()
        else ModelCard()
    )
    import openvino as ov

    precision = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    print(f"Machine: {describe()}; openvino {version('openvino')} (CPU capabilities: {', '.join(precision)})")
    print(f"Command: `.venv/bin/python benchmarks/runtimes.py --rounds {args.rounds}`\n")
    print(
        "| batch, threads | ONNX Runtime ms/image | OpenVINO ms/image | ratio | OpenVINO bfloat16 ms/image |"
    )
    print("|---|---:|---:|---:|---:|")
    for batch, threads in SETUPS:
        ort = OnnxRunner(args.model, card, threads, threads)
        ov_runner = OpenVinoRunner(args.model, card, threads, threads)
        a = per_image_ms(ort.run, batch, args.rounds)
        b = per_image_ms(ov_runner.run, batch, args.rounds)
        c = per_image_ms(openvino_bf16(args.model, card, threads), batch, args.rounds)
        print(f"| {batch}, {threads} | {a:.2f} | {b:.2f} | {a / b:.2f} | {c:.2f} |")
    files = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    data = [path.read_bytes() for path in files]
    answers = {
        runtime: ImageClassifier.load(args.model, runtime=runtime).predict(data)  # type: ignore[arg-type]
        for runtime in ("onnxruntime", "openvino")
    }
    differences = [
        float(np.abs(np.array(a.values) - np.array(b.values)).max())
        for a, b in zip(answers["onnxruntime"], answers["openvino"], strict=True)
    ]
    same = sum(a.prediction == b.prediction for a, b in zip(*answers.values(), strict=True))
    print(
        f"\nOn the course's {len(files)} images: the same label {same} times; values apart by at most "
        f"{max(differences):.4f} (median {statistics.median(differences):.6f})."
    )


if __name__ == "__main__":
    main()
