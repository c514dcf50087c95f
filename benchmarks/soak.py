"""Soak: the service at saturation for a long time with good and hostile requests mixed (not in CI).

    .venv/bin/python benchmarks/soak.py [--minutes 10] [--concurrency 32]

wrk rotates over 30 bodies: 16 real images and 14 hostile ones: text, SVG, empty, random bytes, a
truncated PNG, a pixel bomb, a ZIP, a misnamed part; 40-megapixel PNGs small on the wire (16-bit gray and
RGBA, ~100-170 KB); v2 `infer` bodies with 2.6 million empty elements (7.8 MB), 100,000 levels of
nesting, and a negative shape; a request with 40 KB of headers. Passes when no answer is a 5xx, no
connection fails, and resident memory grows by less than 10% between the end of the first minute
(warm-up) and the end.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe
from serving import BOUNDARY, DEFAULT_IMAGES, HERE, free_port, server, service_command

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.hostile import V2_INFER, V2_NEGATIVE_SHAPE, v2_deep_nesting, v2_empty_elements
from tests.images import png_image


def part(data: bytes, name: str = "file", filename: str = "x.png") -> bytes:
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n\r\n'
    return head.encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()


@dataclass(frozen=True)
class Special:
    """A body that does not go to /upload as multipart: method, path, Content-Type, header filler bytes."""

    method: str
    path: str
    content_type: str
    filler: int = 0

    def meta(self) -> str:
        return f"{self.method}\n{self.path}\n{self.content_type}\n{self.filler}\n"


V2_REQUEST = Special("POST", V2_INFER, "application/json")


def memory_hostile_bodies() -> list[tuple[bytes, Special | None]]:
    """What took the process to gigabytes before its memory limits (issue: bounded memory)."""
    return [
        (part(png_image(6324, 6324, bit_depth=16, color_type=0, flat=True)), None),
        (part(png_image(6324, 6324, bit_depth=8, color_type=6, flat=True)), None),
        (v2_empty_elements(2_600_000), V2_REQUEST),
        (v2_deep_nesting(100_000), V2_REQUEST),
        (V2_NEGATIVE_SHAPE, V2_REQUEST),
        (b"", Special("GET", "/health", "text/plain", filler=40_000)),
    ]


def hostile_bodies(sample: bytes) -> list[bytes]:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("a.txt", "x" * 1000)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    # A valid 1-bit PNG header declaring 40000x40000 pixels (1.6 gigapixels) in a few hundred bytes.
    bomb = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 40_000, 40_000, 1, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(bytes(1024)))
        + chunk(b"IEND", b"")
    )
    return [
        part(b"just text\n" * 100, filename="a.txt"),
        part(b'<svg xmlns="http://www.w3.org/2000/svg"/>', filename="a.svg"),
        part(b""),
        part(os.urandom(20_000)),
        part(sample[: len(sample) // 2]),
        part(bomb),
        part(archive.getvalue(), filename="a.zip"),
        part(sample, name="image"),
    ]


def peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    args = parser.parse_args()
    images = sorted(args.images.rglob("*.png"))[::9][:16]
    bodies: list[tuple[bytes, Special | None]] = [
        (part(p.read_bytes(), filename=p.name), None) for p in images
    ]
    bodies += [(body, None) for body in hostile_bodies(images[0].read_bytes())]
    bodies += memory_hostile_bodies()
    port = free_port()
    with tempfile.TemporaryDirectory() as folder, server(service_command(port, "--no-auth"), port) as process:
        for i, (body, special) in enumerate(bodies):
            Path(folder, f"body_{i}.bin").write_bytes(body)
            if special is not None:
                Path(folder, f"body_{i}.meta").write_text(special.meta())
        samples: list[tuple[float, float]] = []
        stop = threading.Event()

        def sample_memory() -> None:
            start = time.monotonic()
            while not stop.is_set():
                samples.append((time.monotonic() - start, rss_mib(process.pid)))
                stop.wait(5)

        sampler = threading.Thread(target=sample_memory, daemon=True)
        sampler.start()
        seconds = int(args.minutes * 60)
        done = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{args.concurrency}",
                f"-d{seconds}s",
                "--timeout",
                "10s",
                "-s",
                str(HERE / "multipart.lua"),
                f"http://127.0.0.1:{port}",
                "--",
                folder,
                str(len(bodies)),
                "/upload",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        stop.set()
        sampler.join()
        peak = peak_mib(process.pid)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    warm = next((rss for t, rss in samples if t >= 60), samples[0][1])
    end = samples[-1][1]
    server_errors = sum(n for status, n in result["statuses"].items() if status.startswith("5"))
    errors = sum(result["errors"][k] for k in ("connect", "read", "write", "timeout"))
    print(f"Machine: {describe()}")
    print(
        f"Command: .venv/bin/python benchmarks/soak.py --minutes {args.minutes:g} "
        f"--concurrency {args.concurrency}\n"
    )
    print(
        f"- {result['requests']} requests in {result['duration_us'] / 1e6:.0f} s "
        f"({result['requests'] / (result['duration_us'] / 1e6):.1f}/s), by status: {result['statuses']}"
    )
    print(f"- 5xx answers: {server_errors}; connection errors and timeouts: {errors}")
    print(
        f"- RSS after warm-up (60 s): {warm:.1f} MiB; at the end: {end:.1f} MiB; growth "
        f"{100 * (end - warm) / warm:+.1f}% (max sampled {max(r for _, r in samples):.1f} MiB, "
        f"peak {peak:.1f} MiB)"
    )
    print(f"- latency p50 {result['p50_us'] / 1000:.0f} ms, p99 {result['p99_us'] / 1000:.0f} ms")
    per_minute = [f"{rss:.0f}" for t, rss in samples if int(t) % 60 < 5]
    print(f"- RSS (MiB) about once a minute: {' '.join(per_minute)}")
    ok = server_errors == 0 and errors == 0 and end < warm * 1.10
    print(f"\n{'PASS' if ok else 'FAIL'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
