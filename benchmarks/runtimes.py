"""The model alone on each runtime (INFERENCE_RUNTIME): milliseconds per image by batch size and threads,
OpenVINO as the service runs it (float32) and in bfloat16 (its own default on CPUs that have it), and how
far the two runtimes' values are apart on the course's images.

    .venv/bin/python benchmarks/runtimes.py [--model PATH] [--rounds 60] [--seconds 5]

The same ONNX file and the same random uint8 input on both; each configuration in its own session or
compiled model, warmed up, then the median of `--rounds` calls. Then both runtimes as the service calls
them: two one-thread calls side by side, with batches of one size and with the mix of sizes the
micro-batcher forms (`--seconds` each, CPU time of this process). Prints Markdown for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
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
# Batch sizes for the side-by-side calls; the last is what a run at 16 clients forms (batches of 4
# mostly, and the smaller ones the 2 ms wait lets go).
MIXES = [[1], [4], [8], [4, 3, 4, 2, 4, 1]]


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


def side_by_side(
    run: Callable[[np.ndarray], object], sizes: list[int], seconds: float
) -> tuple[float, float]:
    """Images a second and CPU-ms an image with two threads calling `run` at once, as the service's two
    one-thread calls do, cycling through batch `sizes` (the mix the micro-batcher forms)."""
    rng = np.random.default_rng(0)
    inputs = {size: rng.integers(0, 256, (size, 224, 224, 3), dtype=np.uint8) for size in set(sizes)}
    for x in inputs.values():
        run(x)
    images = [0, 0]
    deadline = time.perf_counter() + seconds

    def caller(index: int) -> None:
        call = index
        while time.perf_counter() < deadline:
            run(inputs[sizes[call % len(sizes)]])
            images[index] += sizes[call % len(sizes)]
            call += 1

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(2)]
    cpu, started = time.process_time(), time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return sum(images) / wall, 1000 * cpu / sum(images)


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
    parser.add_argument("--seconds", type=float, default=5.0, help="per side-by-side measurement")
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
    print(
        "Command: `.venv/bin/python benchmarks/runtimes.py "
        f"--rounds {args.rounds} --seconds {args.seconds:g}`\n"
    )
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
    print(
        "\nTwo one-thread calls side by side, as the service makes them (batches cycling through the sizes "
        f"given, {args.seconds:.0f} s each):\n"
    )
    print(
        "| batches | ONNX Runtime images/s | CPU-ms an image | OpenVINO images/s | CPU-ms an image | ratio |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    ort, ov_runner = OnnxRunner(args.model, card, 2, 1), OpenVinoRunner(args.model, card, 2, 1)
    for sizes in MIXES:
        a_rate, a_cpu = side_by_side(ort.run, sizes, args.seconds)
        b_rate, b_cpu = side_by_side(ov_runner.run, sizes, args.seconds)
        label = f"all of {sizes[0]}" if len(sizes) == 1 else ", ".join(map(str, sizes))
        print(
            f"| {label} | {a_rate:.0f} | {a_cpu:.2f} | {b_rate:.0f} | {b_cpu:.2f} | {b_rate / a_rate:.2f} |"
        )
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
