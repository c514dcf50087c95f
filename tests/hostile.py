"""Hostile request bodies and the decode-memory probe, shared by the tests and the benchmarks
(`benchmarks/soak.py`, `hostile_memory.py`, `decode_memory.py`), so that all measure the same things."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
V2_INFER = "/v2/models/cats-dogs-other/infer"
V2_NEGATIVE_SHAPE = (
    b'{"inputs": [{"name": "image", "shape": [-1, -1], "datatype": "BYTES", "data": ["AA=="]}]}'
)


def png_with_text(chunks: int = 80, chunk_bytes: int = 1_000_000) -> bytes:
    """An 8x8 PNG carrying `chunks` zTXt chunks of `chunk_bytes` each once decompressed (~1 KB each on
    the wire), before its pixels: Pillow decompresses them inside Image.open."""
    from PIL import Image

    from tests.images import chunk, encode

    png = encode(Image.new("RGB", (8, 8), (1, 2, 3)), "PNG")
    text = b"".join(
        chunk(b"zTXt", b"k%d\x00\x00" % i + zlib.compress(b"a" * chunk_bytes, 9)) for i in range(chunks)
    )
    return png[:33] + text + png[33:]  # after the 8-byte signature and the 25-byte IHDR chunk


def v2_empty_elements(count: int) -> bytes:
    """A v2 JSON request of `count` empty strings: 3 bytes each, millions of objects once parsed."""
    head = b'{"inputs": [{"name": "image", "shape": [%d], "datatype": "BYTES", "data": [' % count
    return head + b",".join([b'""'] * count) + b"]}]}"


def v2_binary_elements(count: int) -> tuple[bytes, dict[str, str]]:
    """A v2 binary-tensor request of `count` zero-length elements (4 bytes each), and its headers."""
    tensor = {
        "name": "image",
        "shape": [count],
        "datatype": "BYTES",
        "parameters": {"binary_data_size": 4 * count},
    }
    header = json.dumps({"inputs": [tensor]}).encode()
    return header + struct.pack("<I", 0) * count, {"Inference-Header-Content-Length": str(len(header))}


def v2_deep_nesting(depth: int = 100_000) -> bytes:
    return b'{"inputs": ' + b"[" * depth + b"]" * depth + b"}"


@dataclass(frozen=True)
class DecodePeak:
    file_bytes: int
    peak: int  # bytes: VmHWM after decoding minus VmRSS before
    reserved: int  # bytes the decoder reserved from the budget
    seconds: float
    decoded_size: tuple[int, int]


_PROBE = """
import time
from PIL import Image
from tests.images import encode, heic, png_image
from cats_dogs_other.inference import decode
from cats_dogs_other.inference.budget import MemoryBudget

N = {side}
data = {expression}
reserved = []
budget = MemoryBudget(1 << 40)
original = budget.reserve
budget.reserve = lambda n: (reserved.append(n), original(n))[1]
def status(key):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))
open("/proc/self/clear_refs", "w").write("5")
before = status("VmRSS:")
started = time.perf_counter()
decoded = decode.decode_image(data, min_side=448, budget=budget)
print(len(data), status("VmHWM:") - before, reserved[0], time.perf_counter() - started, *decoded.size)
"""


def decode_peak(expression: str, side: int) -> DecodePeak:
    """Decode the image `expression` builds (Python over `N`, `Image`, `encode`, `png_image`) in a
    fresh process, so that its peak resident memory is this decode's and nothing else's (Linux)."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(side=side, expression=expression)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=True,
    )
    size, peak, reserved, seconds, width, height = done.stdout.split()
    return DecodePeak(int(size), int(peak), int(reserved), float(seconds), (int(width), int(height)))
