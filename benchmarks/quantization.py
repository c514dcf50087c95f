"""Is an int8 model faster at equal accuracy? Trains both variants and measures them in one run.

    .venv/bin/python benchmarks/quantization.py [--images DIR] [--seconds 5]

For the float32 model and the static int8 model (QDQ, per-channel, calibrated on the training images):
PDF-grouped validation accuracy (the head is fitted on each variant's own features), file size, and
throughput of the model alone and of decode + model, at batch 1 and 8. Dynamic int8 quantisation is
measured too (no training: same head), since it is the one-line option people try first.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cats_dogs_other.cpu import available_cores
from cats_dogs_other.inference.classifier import ImageClassifier
from cats_dogs_other.training.train import TrainConfig, train
from machine import describe

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cats-dogs-other" / "images"


def rate(seconds: float, step: int, work: object) -> float:
    work()  # type: ignore[operator]
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        work()  # type: ignore[operator]
        done += step
    return done / (time.perf_counter() - start)


def measure(path: Path, blobs: list[bytes], seconds: float) -> dict[str, float]:
    classifier = ImageClassifier.load(path, threads_per_call=available_cores())  # one call, every core
    decoded = np.stack([classifier.decode(b) for b in blobs])
    results = {}
    for batch in (1, 8):
        results[f"model b{batch}"] = rate(seconds, batch, lambda b=batch: classifier.run(decoded[:b]))
        results[f"decode+model b{batch}"] = rate(
            seconds, batch, lambda b=batch: classifier.predict(blobs[:b])
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    blobs = [p.read_bytes() for p in sorted(args.images.rglob("*.png"))[::9][:8]]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, quantize in (("float32", False), ("int8 static", True)):
            out = Path(scratch) / name.replace(" ", "-")
            card = train(TrainConfig(data_dirs=(args.images,), out_dir=out, quantize=quantize)).card
            path = out / "model.onnx"
            rows.append(
                (
                    name,
                    card.metrics["validation"]["accuracy"],
                    path.stat().st_size,
                    measure(path, blobs, args.seconds),
                )
            )
            if not quantize:
                from onnxruntime.quantization import QuantType, quantize_dynamic

                dynamic = Path(scratch) / "dynamic" / "model.onnx"
                dynamic.parent.mkdir()
                quantize_dynamic(str(path), str(dynamic), weight_type=QuantType.QInt8)
                (dynamic.parent / "model.json").write_text((out / "model.json").read_text())
                rows.append(
                    ("int8 dynamic", None, dynamic.stat().st_size, measure(dynamic, blobs, args.seconds))
                )

    print(f"Machine: {describe()}\n")
    keys = list(rows[0][3])
    print("| model | validation accuracy | size MiB | " + " | ".join(f"{k} (img/s)" for k in keys) + " |")
    print("|---|---:|---:|" + "---:|" * len(keys))
    base = rows[0][3]
    for name, accuracy, size, speeds in rows:
        shown = f"{accuracy:.4f}" if accuracy is not None else "(not retrained)"
        cells = " | ".join(f"{speeds[k]:.1f} ({speeds[k] / base[k]:.2f}x)" for k in keys)
        print(f"| {name} | {shown} | {size / 2**20:.1f} | {cells} |")


if __name__ == "__main__":
    main()
