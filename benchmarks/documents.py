"""A PDF of 10 images through `/predict` against the same 10 images sent as image files, in one run;
and both again with the thumbnails the web page asks for (`?thumbnails=true`).

    .venv/bin/python benchmarks/documents.py [--rounds 40]

Starts `cats-dogs-other serve` (auth off) on loopback. The 10 images are the first 10 distinct photos of
the course's PDFs, as the JPEG streams stored in them; the document holds exactly those streams (one per
page), so both requests classify the same bytes. A second document holds the same pictures as Flate
samples (how PNG-sourced pictures are embedded), decoded by pypdf. Requests alternate (image files,
JPEG document, Flate document) so that machine noise hits all three alike; the result is the median time
per request and the ratio of medians. Prints Markdown for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from tests.pdfs import RawImage, flate_image, hand_pdf  # noqa: E402

from cats_dogs_other.inference.documents import read_document  # noqa: E402
from cats_dogs_other.settings import Settings  # noqa: E402
from machine import describe  # noqa: E402

PDFS = ROOT.parent / "shared" / "datasets" / "cats-dogs-other" / "pdfs"
PORT = 8097


def ten_jpegs() -> list[tuple[int, int, bytes]]:
    found: list[tuple[int, int, bytes]] = []
    for path in sorted(PDFS.glob("*.pdf")):
        for image in read_document(path.read_bytes(), Settings().document_limits()).to_classify:
            if isinstance(image.data, bytes) and len(found) < 10:
                found.append((image.width, image.height, image.data))
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    jpegs = ten_jpegs()
    entries = b"/Width %d /Height %d /ColorSpace /DeviceRGB /BitsPerComponent 8 /Filter /DCTDecode"
    jpeg_pdf = hand_pdf([[RawImage(entries % (w, h), data)] for w, h, data in jpegs])
    flate_pdf = hand_pdf([[flate_image(Image.open(io.BytesIO(data)))] for _, _, data in jpegs])
    files = [("files", (f"{k}.jpg", data)) for k, (_, _, data) in enumerate(jpegs)]
    bodies = {
        "10 JPEG files": files,
        "1 PDF, 10 JPEG images": [("files", ("doc.pdf", jpeg_pdf))],
        "1 PDF, 10 Flate images": [("files", ("flate.pdf", flate_pdf))],
        "10 JPEG files, ?thumbnails=true": files,
        "1 PDF, 10 JPEG images, ?thumbnails=true": [("files", ("doc.pdf", jpeg_pdf))],
    }
    paths = {name: "/predict?thumbnails=true" if "thumbnails" in name else "/predict" for name in bodies}
    server = subprocess.Popen(
        [sys.executable, "-m", "cats_dogs_other.cli", "serve", "--no-auth", "--port", str(PORT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    times: dict[str, list[float]] = {name: [] for name in bodies}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{PORT}", timeout=60) as client:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if client.get("/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            for _ in range(3):  # warm-up: first batches, arenas, the PDF reader's imports
                for name, files in bodies.items():
                    client.post(paths[name], files=files).raise_for_status()
            for _ in range(args.rounds):
                for name, files in bodies.items():
                    started = time.perf_counter()
                    response = client.post(paths[name], files=files)
                    times[name].append(time.perf_counter() - started)
                    response.raise_for_status()
    finally:
        server.terminate()
        server.wait(30)
    base = statistics.median(times["10 JPEG files"])
    print(f"Machine: {describe()}\n")
    print(f"Command: `.venv/bin/python benchmarks/documents.py --rounds {args.rounds}`\n")
    print("| request (10 images each) | bytes | median ms | p90 ms | ms per image | vs image files |")
    print("|---|---|---|---|---|---|")
    for name, samples in times.items():
        median = statistics.median(samples)
        p90 = statistics.quantiles(samples, n=10)[-1]
        size = sum(len(part[1][1]) for part in bodies[name])
        print(
            f"| {name} | {size:,} | {median * 1000:.1f} | {p90 * 1000:.1f} | {median * 100:.1f} "
            f"| {median / base:.3f}x |"
        )


if __name__ == "__main__":
    main()
