"""Ways from a small JPEG to the model's 224x224 input: what the service does (Pillow, draft decode, the
card's bilinear resize) against the alternatives issue 31 asked about, in milliseconds per image on one
thread, with how far each one's input is from the service's (mean absolute difference, 0-255 scale).

    .venv/bin/python benchmarks/preprocess.py [--rounds 30]

simplejpeg (libjpeg-turbo with DCT scaling) and OpenCV are measured when installed (`pip install
simplejpeg opencv-python-headless` into a scratch folder and put it on PYTHONPATH); neither is a
dependency of the project. The bodies are cost.py's: 16 of the course's images as quality-90 JPEGs.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cats_dogs_other.inference.classifier import ImageClassifier  # noqa: E402
from inference import DEFAULT_IMAGES  # noqa: E402
from machine import describe  # noqa: E402
from serving import encoded  # noqa: E402

SIDE = 224
Way = Callable[[bytes], np.ndarray]


def small_jpegs(images: Path) -> list[bytes]:
    """cost.py's and serving.py's bodies: 16 of the course's images as quality-90 JPEGs."""
    return [encoded(path, "jpeg") for path in sorted(images.rglob("*.png"))[::9][:16]]


def pillow_decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.draft("RGB", (SIDE, SIDE))
    image.load()
    return image


def pillow(reducing_gap: float | None = None) -> Way:
    def way(data: bytes) -> np.ndarray:
        resized = (
            pillow_decode(data)
            .convert("RGB")
            .resize((SIDE, SIDE), Image.Resampling.BILINEAR, reducing_gap=reducing_gap)
        )
        return np.asarray(resized)

    return way


def optional_ways() -> dict[str, Way]:
    ways: dict[str, Way] = {}
    try:
        import simplejpeg  # type: ignore[import-not-found]

        def simplejpeg_way(data: bytes) -> np.ndarray:
            pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=SIDE, min_width=SIDE)
            return np.asarray(Image.fromarray(pixels).resize((SIDE, SIDE), Image.Resampling.BILINEAR))

        ways[f"simplejpeg {simplejpeg.__version__} (DCT-scaled decode), Pillow resize"] = simplejpeg_way
    except ImportError:
        print("simplejpeg not installed: its row is left out", file=sys.stderr)
    try:
        import cv2  # type: ignore[import-not-found]

        def opencv(interpolation: int) -> Way:
            def way(data: bytes) -> np.ndarray:
                pixels = np.asarray(pillow_decode(data).convert("RGB"))
                return np.asarray(cv2.resize(pixels, (SIDE, SIDE), interpolation=interpolation))

            return way

        # INTER_LINEAR reads 2x2 pixels whatever the scale (no antialiasing); INTER_AREA averages, as
        # Pillow's bilinear does when it shrinks.
        for name in ("INTER_LINEAR", "INTER_AREA"):
            ways[f"Pillow decode, OpenCV {cv2.__version__} {name} resize"] = opencv(getattr(cv2, name))
    except ImportError:
        print("OpenCV not installed: its row is left out", file=sys.stderr)
    return ways


def ms_per_image(way: Callable[[bytes], object], bodies: list[bytes], rounds: int) -> float:
    for data in bodies:
        way(data)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        for data in bodies:
            way(data)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times) / len(bodies)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    bodies = small_jpegs(args.images)
    classifier = ImageClassifier.load()
    service = [classifier.decode(data).astype(np.float32) for data in bodies]
    ways: dict[str, Way] = {
        "the service (decode, resize, uint8 array: `ImageClassifier.decode`)": classifier.decode,
        "Pillow draft decode alone": lambda data: np.asarray(pillow_decode(data)),
        "Pillow draft decode + bilinear resize (what the service does)": pillow(),
        "the same, `reducing_gap=2.0`": pillow(2.0),
        "the same, `reducing_gap=1.0`": pillow(1.0),
        **optional_ways(),
    }
    try:
        simd = f", pillow-simd {version('pillow-simd')}"
    except PackageNotFoundError:
        simd = ""
    print(f"Machine: {describe()}{simd}\n")
    print(f"{len(bodies)} small JPEGs, one thread, median of {args.rounds} rounds.\n")
    print("| way to the model's input | ms per image | mean abs difference to the service's input |")
    print("|---|---:|---:|")
    for name, way in ways.items():
        ms = ms_per_image(way, bodies, args.rounds)
        if name.startswith("Pillow draft decode alone"):
            difference = "—"
        else:
            outputs = [way(data).astype(np.float32) for data in bodies]
            apart = [np.abs(a - b).mean() for a, b in zip(outputs, service, strict=True)]
            difference = f"{np.mean(apart):.2f}"
        print(f"| {name} | {ms:.2f} | {difference} |")


if __name__ == "__main__":
    main()
