"""What one answer costs in CPU time, by what is sent: the number a cluster is sized with.

    .venv/bin/python benchmarks/cost.py [--duration 10] [--concurrency 8] [--runtime R] [--src DIR]

For each kind of input, one `cats-dogs-other serve` process (auth off) is kept saturated by wrk (every
client sends its next request as soon as it has an answer) and the process's CPU time is read from
/proc before and after: user + system time of all its threads, divided by the answers it gave. Kinds:
a small JPEG (16 dataset images as quality-90 JPEGs, ~30 KB), a 12-megapixel phone JPEG (4032x3024,
quality 92, with sensor-like noise: ~4 MB), a 2500-pixel PNG screenshot, a 12-megapixel AVIF and HEIC
(0.6 and 2 MB; the latter when the `heic` extra is installed), and a PDF of 10 images (the first 10
distinct photos of the course's PDFs, through POST /predict), and a phone's full-size photos: a 24 MP
HEIC and a 48 MP JPEG. Then, in this process, what the small JPEGs cost without the service: the model
alone on the runtime the service runs (`--runtime`, INFERENCE_RUNTIME), its calls as the service makes
them (batches of 4, one one-thread call per core side by side), and decode + resize alone (a thread per
core). `--src` runs another checkout's `src/` (a `git worktree`) as the service, with this venv, for a
before/after. Beside the service's busy cores, the table gives wrk's (the load generator shares the
machine), the machine's idle cores and the cores its hypervisor stole, so where the cores the service did
not use went is measured, not guessed. Prints Markdown for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from tests.images import encode, heic, phone_photo  # noqa: E402
from tests.pdfs import RawImage, hand_pdf  # noqa: E402

from cats_dogs_other.cpu import available_cores  # noqa: E402
from cats_dogs_other.inference.classifier import ImageClassifier  # noqa: E402
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
    # A phone's default photo and a 48 MP camera's, as tests/api/test_memory_bounds.py sends them.
    if HEIF_AVAILABLE:
        kinds["24 MP HEIC (5712x4284)"] = (
            "/upload",
            [heic(phone_photo(source, (5712, 4284), noise_level=2), quality=60)],
            1,
        )
    kinds["48 MP JPEG (8064x6048)"] = (
        "/upload",
        [encode(phone_photo(source, (8064, 6048), noise_level=3), "JPEG", quality=85)],
        1,
    )
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


def machine_seconds() -> tuple[float, float]:
    """Idle (with I/O wait) and stolen CPU seconds of the whole machine, all cores: where the cores the
    service did not use went, besides the load generator."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return (fields[3] + fields[4]) / TICKS, fields[7] / TICKS


def measure(
    route: str, bodies: list[bytes], seconds: float, concurrency: int, env: dict[str, str]
) -> dict[str, float]:
    port = free_port()
    command = service_command(port, "--no-auth")
    with tempfile.TemporaryDirectory() as folder, server(command, port, env) as process:
        for i, body in enumerate(bodies):
            (Path(folder) / f"body_{i}.bin").write_bytes(body)
        base = f"http://127.0.0.1:{port}"
        warm = [*["wrk", "-t1", "-c2", "-d2s", "--timeout", "30s"], "-s", str(HERE / "multipart.lua"), base]
        subprocess.run([*warm, "--", folder, str(len(bodies)), route], capture_output=True, check=True)
        before, started = cpu_seconds(process.pid), time.monotonic()
        (idle_before, stolen_before) = machine_seconds()
        wrk_before = resource.getrusage(resource.RUSAGE_CHILDREN)  # the server is not reaped yet
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
        (idle, stolen), wrk = machine_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    answered = result["statuses"].get("200", 0)
    return {
        "answers": answered,
        "others": result["requests"] - answered,
        "rps": answered / (result["duration_us"] / 1e6),
        "cpu_ms": 1000 * used / max(answered, 1),
        "cores": used / wall,
        "p50_ms": result["p50_us"] / 1000,
        "wrk_cores": (wrk.ru_utime + wrk.ru_stime - wrk_before.ru_utime - wrk_before.ru_stime) / wall,
        "idle_cores": (idle - idle_before) / wall,
        "stolen_cores": (stolen - stolen_before) / wall,
    }


def cpu_ms_per_item(work: Callable[[int], int], threads: int, seconds: float) -> float:
    """CPU-ms of this process per item while `threads` threads repeat `work(call) -> items`."""
    deadline = time.monotonic() + seconds
    done = [0] * threads

    def repeat(index: int) -> None:
        call = index
        while time.monotonic() < deadline:
            done[index] += work(call)
            call += threads

    workers = [threading.Thread(target=repeat, args=(i,)) for i in range(threads)]
    before = time.process_time()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return 1000 * (time.process_time() - before) / sum(done)


def without_the_service(jpegs: list[bytes], runtime: str, seconds: float) -> dict[str, object]:
    """The small JPEGs' cost in this process: the model alone as the service calls it, decode + resize."""
    classifier = ImageClassifier.load(runtime=runtime)  # type: ignore[arg-type]
    inputs = [classifier.decode(data) for data in jpegs]
    batches = [np.stack([inputs[(i + k) % len(inputs)] for k in range(4)]) for i in range(len(inputs))]
    for batch in batches:
        classifier.run(batch)

    def infer(call: int) -> int:
        classifier.run(batches[call % len(batches)])
        return 4

    def prepare(call: int) -> int:
        classifier.decode(jpegs[call % len(jpegs)])
        return 1

    threads = classifier.parallel_calls
    return {
        "runtime": classifier.runtime,
        "model": cpu_ms_per_item(infer, threads, seconds),
        "prepare": cpu_ms_per_item(prepare, available_cores(), seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--runtime", default="auto", help="INFERENCE_RUNTIME for the service and the model")
    parser.add_argument("--src", type=Path, default=None, help="a checkout's src/ folder to serve instead")
    args = parser.parse_args()
    env = {"INFERENCE_RUNTIME": args.runtime, **({"PYTHONPATH": str(args.src)} if args.src else {})}
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk (or make benchmark)")
    images = sorted(args.images.rglob("*.png"))[::9][:16]
    rows = []
    kinds = inputs(images)
    for name, (route, bodies, count) in kinds.items():
        result = measure(route, bodies, args.duration, args.concurrency, env)
        print(f"  {name}: {result['rps']:.1f} answers/s, {result['cpu_ms']:.2f} CPU-ms", file=sys.stderr)
        body_kb = sum(len(b) for b in bodies) / len(bodies) / 1000
        rows.append((name, route, body_kb, count, result))
    print(f"Machine: {describe()}\n")
    print(f"`{args.concurrency}` clients, {args.duration:.0f} s per kind, every answer a 200 unless said.\n")
    print(
        "| sent | route | body KB | answers/s | CPU-ms per answer | CPU-ms per image | answers/s per core "
        "| cores busy | wrk's cores | idle cores | stolen cores | p50 ms | non-200 |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, route, body_kb, count, r in rows:
        # No answer at all (every request refused, e.g. a 413 for a photo over the budget): no cost.
        answered = r["answers"] > 0
        cost = (
            f"{r['cpu_ms']:.2f} | {r['cpu_ms'] / count:.2f} | {1000 / r['cpu_ms']:.0f}"
            if answered
            else "— | — | —"
        )
        print(
            f"| {name} | `{route}` | {body_kb:,.0f} | {r['rps']:.1f} | {cost} | {r['cores']:.2f} | "
            f"{r['wrk_cores']:.2f} | {r['idle_cores']:.2f} | {r['stolen_cores']:.2f} | {r['p50_ms']:.0f} | "
            f"{r['others']:.0f} |"
        )
    alone = without_the_service([encoded(p, "jpeg") for p in images], args.runtime, args.duration)
    small = rows[0][4]["cpu_ms"]
    print(f"\nThe small JPEGs without the service, in the same run ({alone['runtime']}):\n")
    print("| work | CPU-ms per image | answer's CPU-ms / this |")
    print("|---|---:|---:|")
    model, prepare = float(alone["model"]), float(alone["prepare"])  # type: ignore[arg-type]
    for work, cost in (
        ("the model alone, batches of 4, one call per core", model),
        ("decode + resize alone, a thread per core", prepare),
        ("both", model + prepare),
    ):
        print(f"| {work} | {cost:.2f} | {small / cost:.2f} |")


if __name__ == "__main__":
    main()
