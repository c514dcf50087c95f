"""What one hostile request does to a server's memory (not in CI): each case against a fresh `serve`.

    .venv/bin/python benchmarks/hostile_memory.py [--src DIR] [--only NAME ...] [--v2-elements N]
                                                  [--repeat N] [--documents N]

For each case: the answer, the peak RSS growth (VmHWM after the request minus RSS before it, read from
/proc), RSS two seconds after, how long the answer took, and for floods how long `/health` took
meanwhile (for documents: p99 / slowest of its probes every 50 ms during the request). Document cases
also report the server's CPU
seconds (/proc/PID/stat). `--documents N` adds N generated hostile documents (tests/pdfs.py
`hostile_document`, seeds 0..2N-1, two to a request like the tests). `--src` runs another checkout's
`src/` (e.g. a `git worktree` of an older commit) with this
virtualenv, to compare before and after in one session. `--repeat N` sends each case N times to the
same server (one row each), which shows what a process keeps. Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.hostile import (
    V2_INFER,
    png_with_text,
    v2_binary_elements,
    v2_deep_nesting,
    v2_empty_elements,
)
from tests.images import encode, heic, phone_photo, png_image
from tests.pdfs import form_forest, hostile_document, many_objects_pdf, object_stream_pdf, zero_images
from tests.servers import ProcessMemory

from machine import describe
from serving import DEFAULT_IMAGES, free_port


@dataclass
class Outcome:
    answer: str
    health_ms: float | None = None
    health_p99_ms: float | None = None


def _p99(probes: list[float]) -> float | None:
    return sorted(probes)[min(len(probes) - 1, int(len(probes) * 0.99))] if probes else None


def status(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    return float("nan")


def raw_answer(sock: socket.socket) -> str:
    sock.settimeout(30)
    try:
        head = sock.recv(200)
    except OSError as exc:
        return type(exc).__name__
    return head.split(b"\r\n", 1)[0].decode(errors="replace").removeprefix("HTTP/1.1 ") or "closed"


def header_flood(line: bytes) -> Callable[[str, int], Outcome]:
    def run(base_url: str, port: int) -> Outcome:
        answers: list[str] = []

        def flood() -> None:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
                deadline = time.monotonic() + 8
                try:
                    while time.monotonic() < deadline:
                        sock.sendall(line)
                except OSError:
                    pass
                answers.append(raw_answer(sock))

        threads = [threading.Thread(target=flood) for _ in range(2)]
        for thread in threads:
            thread.start()
        time.sleep(1)
        started = time.monotonic()
        httpx.get(f"{base_url}/health", timeout=60)
        health = (time.monotonic() - started) * 1000
        for thread in threads:
            thread.join()
        return Outcome(", ".join(sorted(set(answers))), health)

    return run


def pipelined(base_url: str, port: int) -> Outcome:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        with contextlib.suppress(OSError):  # the server may hang up before all is sent
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 200_000)
        return Outcome(raw_answer(sock))


def v2_elements(count: int) -> Callable[[str, int], Outcome]:
    def run(base_url: str, port: int) -> Outcome:
        response = httpx.post(base_url + V2_INFER, content=v2_empty_elements(count), timeout=600)
        return Outcome(str(response.status_code))

    return run


def upload(name: str, data: Callable[[], bytes], copies: int = 1) -> Callable[[str, int], Outcome]:
    def run(base_url: str, port: int) -> Outcome:
        image = data()
        if copies == 1:
            response = httpx.post(f"{base_url}/upload", files={"file": (name, image)}, timeout=600)
        else:
            files = [("files", (f"{i}-{name}", image)) for i in range(copies)]
            response = httpx.post(f"{base_url}/predict", files=files, timeout=600)
        return Outcome(str(response.status_code))

    return run


def documents(make: Callable[[], list[bytes]]) -> Callable[[str, int], Outcome]:
    """One /predict of these PDFs, /health probed every 50 ms meanwhile (its slowest answer reported).
    The PDFs are made before the clock starts (`prepare`)."""
    make = functools.cache(make)

    def run(base_url: str, port: int) -> Outcome:
        files = [("files", (f"d{i}.pdf", data)) for i, data in enumerate(make())]
        probes: list[float] = []
        done = threading.Event()

        def probe() -> None:
            while not done.is_set():
                started = time.monotonic()
                httpx.get(f"{base_url}/health", timeout=60)
                probes.append((time.monotonic() - started) * 1000)
                time.sleep(0.05)

        prober = threading.Thread(target=probe)
        prober.start()
        try:
            response = httpx.post(f"{base_url}/predict", files=files, timeout=600)
        except httpx.HTTPError as exc:
            return Outcome(type(exc).__name__, max(probes, default=None), _p99(probes))
        finally:
            done.set()
            prober.join()
        codes: dict[str, int] = {}
        for answer in response.json() if response.status_code == 200 else []:
            for item in answer.get("images", [answer]):
                error = item.get("error", {})
                code = "200" if "prediction" in item else str(error.get("code", error.get("status")))
                codes[code] = codes.get(code, 0) + 1
        shown = ", ".join(f"{count} {code}" for code, count in sorted(codes.items()))
        return Outcome(f"{response.status_code} ({shown})", max(probes, default=None), _p99(probes))

    run.prepare = make  # type: ignore[attr-defined]
    return run


def deep_json(base_url: str, port: int) -> Outcome:
    return Outcome(str(httpx.post(base_url + V2_INFER, content=v2_deep_nesting(), timeout=60).status_code))


def binary_elements(base_url: str, port: int) -> Outcome:
    body, headers = v2_binary_elements(2_600_000)
    response = httpx.post(base_url + V2_INFER, content=body, headers=headers, timeout=600)
    return Outcome(str(response.status_code))


def photo(name: str, make: Callable[[], bytes]) -> Callable[[str, int], Outcome]:
    """One /upload of a phone-sized photo, made before the clock starts (`prepare`)."""
    make = functools.cache(make)

    def run(base_url: str, port: int) -> Outcome:
        response = httpx.post(f"{base_url}/upload", files={"file": (name, make())}, timeout=600)
        return Outcome(str(response.status_code))

    run.prepare = make  # type: ignore[attr-defined]
    return run


def phone(size: tuple[int, int], kind: str, noise: int, quality: int) -> bytes:
    """A course photo at a phone camera's size with sensor-like noise (tests/images.py `phone_photo`)."""
    from PIL import Image

    cat = next(path for path in sorted(DEFAULT_IMAGES.rglob("*")) if path.suffix.lower() in {".png", ".jpg"})
    image = phone_photo(Image.open(cat), size, noise_level=noise)
    return heic(image, quality=quality) if kind == "HEIC" else encode(image, "JPEG", quality=quality)


def gray16() -> bytes:
    return png_image(6324, 6324, bit_depth=16, color_type=0, flat=True)


def rgba() -> bytes:
    return png_image(6324, 6324, bit_depth=8, color_type=6, flat=True)


def cases(v2_count: int) -> dict[str, Callable[[str, int], Outcome]]:
    return {
        "header lines, 2 connections x 8 s": header_flood(b"ab:cd\r\n" * 10_000),
        "one endless header, 2 connections x 8 s": header_flood(b"x" * 70_000),
        "200,000 pipelined GETs (6.8 MB), never reading": pipelined,
        f"v2 JSON, {v2_count:,} empty elements": v2_elements(v2_count),
        "v2 binary tensor, 2,600,000 empty elements": binary_elements,
        "v2 JSON nested 100,000 deep": deep_json,
        "PNG with 80 MB of zTXt text (81 KB)": upload("text.png", png_with_text),
        "16 PNGs with 80 MB of zTXt text in one /predict": upload("text.png", png_with_text, copies=16),
        "phone JPEG 4032x3024, 12 MP (4 MB)": photo("phone.jpg", lambda: phone((4032, 3024), "JPEG", 10, 92)),
        "phone HEIC 5712x4284, 24 MP (1.5 MB)": photo(
            "phone.heic", lambda: phone((5712, 4284), "HEIC", 2, 60)
        ),
        "camera JPEG 8064x6048, 48 MP (3.7 MB)": photo(
            "camera.jpg", lambda: phone((8064, 6048), "JPEG", 3, 85)
        ),
        "16-bit gray PNG 6324x6324 (88 KB)": upload("gray16.png", gray16),
        "RGBA PNG 6324x6324 (167 KB)": upload("rgba.png", rgba),
        "16 RGBA PNGs 6324x6324 in one /predict": upload("rgba.png", rgba, copies=16),
        "PDF of 64 images of zeros, 5000x5000 each (4.7 MB)": documents(lambda: [zero_images(64, 5000)]),
        "16 PDFs of 200 pages sharing 4,000 forms (10 MB)": documents(lambda: [form_forest(200, 4000)] * 16),
        "PDF of 200 pages sharing 30,000 forms (4.6 MB)": documents(lambda: [form_forest(200, 30000)]),
        "PDF of 400,000 objects in object streams (2.8 MB)": documents(lambda: [object_stream_pdf(400_000)]),
        "PDF of 200,000 objects in an xref table (9.5 MB)": documents(lambda: [many_objects_pdf(200_000)]),
        "PDF of 60,000 objects in an object stream (0.4 MB)": documents(lambda: [object_stream_pdf(60_000)]),
        "16 PDFs of 60,000 objects in object streams (6.5 MB)": documents(
            lambda: [object_stream_pdf(60_000)] * 16
        ),
    }


def generated(count: int) -> dict[str, Callable[[str, int], Outcome]]:
    return {
        f"generated documents, seeds {2 * n} and {2 * n + 1}": documents(
            lambda n=n: [hostile_document(2 * n), hostile_document(2 * n + 1, max_bytes=1 << 20)]  # type: ignore[misc]
        )
        for n in range(count)
    }


def start(src: Path | None, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(src)} if src else dict(os.environ)
    command = [sys.executable, "-m", "cats_dogs_other.cli", "serve", "--no-auth"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the server did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--src", type=Path, default=None, help="a checkout's src/ folder to run instead")
    parser.add_argument("--only", nargs="*", default=None, help="case names (substrings) to run")
    parser.add_argument("--v2-elements", type=int, default=2_600_000)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each case on one server")
    parser.add_argument("--documents", type=int, default=0, help="requests of generated documents")
    args = parser.parse_args()
    print(f"Machine: {describe()}")
    print(f"Command: .venv/bin/python benchmarks/hostile_memory.py {' '.join(sys.argv[1:])}\n")
    print(
        "| request | answer | peak RSS growth MiB | RSS after MiB | answered in s | server CPU s "
        "| /health meanwhile ms |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, run in (cases(args.v2_elements) | generated(args.documents)).items():
        if args.only and not any(part in name for part in args.only):
            continue
        port = free_port()
        process = start(args.src, port)
        try:
            for attempt in range(args.repeat):
                if hasattr(run, "prepare"):
                    run.prepare()
                Path(f"/proc/{process.pid}/clear_refs").write_text("5")
                server = ProcessMemory(process.pid)
                before, cpu = status(process.pid, "VmRSS:"), server.cpu_seconds()
                started = time.monotonic()
                outcome = run(f"http://127.0.0.1:{port}", port)
                took = time.monotonic() - started
                used = server.cpu_seconds() - cpu if process.poll() is None else float("nan")
                peak = status(process.pid, "VmHWM:") - before
                time.sleep(2)
                after = status(process.pid, "VmRSS:")
                health = f"{outcome.health_ms:.0f}" if outcome.health_ms is not None else ""
                if outcome.health_p99_ms is not None:
                    health = f"{outcome.health_p99_ms:.0f} / {health}"
                label = f"{name} (run {attempt + 1})" if args.repeat > 1 else name
                cells = [label, outcome.answer, f"{peak:.0f}", f"{after:.0f}", f"{took:.1f}", f"{used:.1f}"]
                cells.append(health)
                print("| " + " | ".join(cells) + " |", flush=True)
        finally:
            process.terminate()
            process.wait(30)


if __name__ == "__main__":
    main()
