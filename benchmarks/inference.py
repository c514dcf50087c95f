"""In-process throughput of the inference engine: decode + preprocess + ONNX Runtime, no HTTP.

    .venv/bin/python benchmarks/inference.py [--images DIR] [--seconds 5]

Prints a Markdown table for BENCHMARKS.md. Each batch size runs for a fixed time over the real dataset's
images (encoded PNG bytes held in memory, so disk is not measured).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cats_dogs_other.cpu import available_cores
from cats_dogs_other.inference.classifier import ImageClassifier
from machine import describe

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cats-dogs-other" / "images"


def measure(seconds: float, step: int, work: callable) -> float:  # type: ignore[valid-type]
    """Images per second over at least `seconds`, after one warm-up call."""
    work()
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        work()
        done += step
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()

    classifier = ImageClassifier.load(args.model, threads_per_call=available_cores())  # one call, every core
    blobs = [p.read_bytes() for p in sorted(args.images.rglob("*.png"))]
    print(f"Machine: {describe()}")
    print(
        f"Model: {classifier.model_path.name} ({classifier.model_path.stat().st_size / 2**20:.1f} MiB), "
        f"{len(blobs)} images, {args.seconds:g} s per row\n"
    )
    print("| batch | decode + infer (images/s) | infer only (images/s) | decode only (images/s) |")
    print("|---:|---:|---:|---:|")
    decoded = [classifier.decode(b) for b in blobs]
    for batch in (1, 4, 8, 16):
        cursor = 0

        def chunk(items: list, size: int = batch) -> list:  # type: ignore[type-arg]
            nonlocal cursor
            picked = [items[(cursor + i) % len(items)] for i in range(size)]
            cursor = (cursor + size) % len(items)
            return picked

        end_to_end = measure(args.seconds, batch, lambda: classifier.predict(chunk(blobs)))
        infer = measure(args.seconds, batch, lambda: classifier.run(np.stack(chunk(decoded))))
        decode = measure(args.seconds, batch, lambda: [classifier.decode(b) for b in chunk(blobs)])
        print(f"| {batch} | {end_to_end:.1f} | {infer:.1f} | {decode:.1f} |", flush=True)


if __name__ == "__main__":
    main()
