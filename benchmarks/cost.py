"""What one answer costs in CPU time, by what is sent: the number a cluster is sized with.

    .venv/bin/python benchmarks/cost.py [--duration 10] [--concurrency 8]

For each kind of input, one `cats-dogs-other serve` process (auth off) is kept saturated by wrk (every
client sends its next request as soon as it has an answer) and the process's CPU time is read from
/proc before and after: user + system time of all its threads, divided by the answers it gave. Kinds:
a small JPEG (16 dataset images as quality-90 JPEGs, ~30 KB), a 12-megapixel phone JPEG (4032x3024,
quality 92, with sensor-like noise: ~4 MB), a 2500-pixel PNG screenshot, a 12-megapixel AVIF and HEIC
(0.6 and 2 MB; the latter when the `heic` extra is installed), and a PDF of 10 images (the first 10
distinct photos of the course's PDFs, through POST /predict). Prints Markdown for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from tests.images import encode, heic, phone_photo  # noqa: E402
from tests.pdfs import RawImage, hand_pdf  # noqa: E402

from cats_dogs_other.inference.decode import HEIF_AVAILABLE  # noqa: E402
from documents import ten_jpegs  # noqa: E402
from machine import describe  # noqa: E402
from serving import DEFAULT_IMAGES, encoded, free_port, multipart_body, server, service_command  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def inputs(images: list[Path]) -> dict[str, tuple[str, list[bytes], int]]:
    """Each kind: its route, its multipart bodies, and the images one request holds."""
    source = Image.open(images[0])
    phone = phone_photo(source, (4032, 3024))
    smooth = phone_photo(source, (4032, 3024), noise_level=3)
    kinds = {
        "small JPEG (~30 KB, 500 px)": ("/upload", [encoded(p, "jpeg") for p in images], 1),
        "12 MP JPEG (4032x3024)": ("/upload", [encode(phone, "JPEG", quality=92)], 1),
        "2500 px PNG (2500x1875)": (
            "/upload",
            [encode(source.convert("RGB").resize((2500, 1875), Image.Resampling.BICUBIC), "PNG")],
            1,
        ),
        "12 MP AVIF": ("/upload", [encode(smooth, "AVIF", quality=75, speed=6)], 1),
    }
    if HEIF_AVAILABLE:
        kinds["12 MP HEIC"] = ("/upload", [heic(smooth, quality=50, fast=False)], 1)
    entries = b"/Width %d /Height %d /ColorSpace /DeviceRGB /BitsPerComponent 8 /Filter /DCTDecode"
    pdf = hand_pdf([[RawImage(entries % (w, h), data)] for w, h, data in ten_jpegs()])
    kinds["PDF of 10 images"] = ("/predict", [pdf], 10)
    return {
        name: (
            route,
            [
                multipart_body(f"f{i}", data, "files" if route == "/predict" else "file")
                for i, data in enumerate(datas)
            ],
            count,
        )
        for name, (route, datas, count) in kinds.items()
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime, all threads


def measure(route: str, bodies: list[bytes], seconds: float, concurrency: int) -> dict[str, float]:
    port = free_port()
    with tempfile.TemporaryDirectory() as folder, server(service_command(port, "--no-auth"), port) as process:
        for i, body in enumerate(bodies):
            (Path(folder) / f"body_{i}.bin").write_bytes(body)
        base = f"http://127.0.0.1:{port}"
        warm = [*["wrk", "-t1", "-c2", "-d2s", "--timeout", "30s"], "-s", str(HERE / "multipart.lua"), base]
        subprocess.run([*warm, "--", folder, str(len(bodies)), route], capture_output=True, check=True)
        before, started = cpu_seconds(process.pid), time.monotonic()
        command = [
            *f"wrk -t1 -c{concurrency} -d{int(seconds)}s --timeout 30s".split(),
            "-s",
            str(HERE / "multipart.lua"),
            base,
            "--",
            folder,
            str(len(bodies)),
            route,
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        used, wall = cpu_seconds(process.pid) - before, time.monotonic() - started
    result = json.loads(done.stdout.strip().splitlines()[-1])
    answered = result["statuses"].get("200", 0)
    return {
        "answers": answered,
        "others": result["requests"] - answered,
        "rps": answered / (result["duration_us"] / 1e6),
        "cpu_ms": 1000 * used / max(answered, 1),
        "cores": used / wall,
        "p50_ms": result["p50_us"] / 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk (or make benchmark)")
    images = sorted(args.images.rglob("*.png"))[::9][:16]
    rows = []
    for name, (route, bodies, count) in inputs(images).items():
        result = measure(route, bodies, args.duration, args.concurrency)
        print(f"  {name}: {result['rps']:.1f} answers/s, {result['cpu_ms']:.2f} CPU-ms", file=sys.stderr)
        body_kb = sum(len(b) for b in bodies) / len(bodies) / 1000
        rows.append((name, route, body_kb, count, result))
    print(f"Machine: {describe()}\n")
    print(f"`{args.concurrency}` clients, {args.duration:.0f} s per kind, every answer a 200 unless said.\n")
    print(
        "| sent | route | body KB | answers/s | CPU-ms per answer | CPU-ms per image | answers/s per core "
        "| cores busy | p50 ms | non-200 |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, route, body_kb, count, r in rows:
        print(
            f"| {name} | `{route}` | {body_kb:,.0f} | {r['rps']:.1f} | {r['cpu_ms']:.2f} | "
            f"{r['cpu_ms'] / count:.2f} | {1000 / r['cpu_ms']:.0f} | {r['cores']:.2f} | {r['p50_ms']:.0f} | "
            f"{r['others']:.0f} |"
        )


if __name__ == "__main__":
    main()
