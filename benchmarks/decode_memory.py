"""Peak memory of decoding one large image, per decoder, against what the decoder reserves (not in CI).

    .venv/bin/python benchmarks/decode_memory.py [--side 6324]

Each case runs in a fresh process: its peak RSS (VmHWM, reset through /proc/self/clear_refs just
before) minus its RSS before, against the bytes `decode_image` reserved from the decode budget for it,
and the time taken. The reservation must cover the peak; tests/inference/test_decode.py checks the same
at a smaller size. Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe

REPO = Path(__file__).resolve().parent.parent
CASES = {
    "PNG 16-bit gray": "png_image(N, N, bit_depth=16, color_type=0, flat=True)",
    "PNG RGBA": "png_image(N, N, bit_depth=8, color_type=6, flat=True)",
    "PNG RGBA interlaced": "png_image(N, N, bit_depth=8, color_type=6, interlace=True)",
    "PNG palette": "png_image(N, N, bit_depth=8, color_type=3)",
    "PNG 1-bit": "png_image(N, N, bit_depth=1, color_type=0)",
    "JPEG baseline": "encode(Image.new('RGB', (N, N), (9, 99, 199)), 'JPEG')",
    "JPEG progressive": "encode(Image.new('RGB', (N, N), (9, 99, 199)), 'JPEG', progressive=True)",
    "WebP lossy": "encode(Image.new('RGB', (N, N), (9, 99, 199)), 'WEBP', quality=80)",
    "WebP lossless RGBA": "encode(Image.new('RGBA', (N, N)), 'WEBP', lossless=True)",
    "TIFF RGBA deflate": "encode(Image.new('RGBA', (N, N)), 'TIFF', compression='tiff_deflate')",
    "GIF": "encode(Image.new('P', (N, N)), 'GIF')",
}
SCRIPT = """
import time
from PIL import Image
from tests.images import encode, png_image
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--side", type=int, default=6324, help="width and height of every image")
    args = parser.parse_args()
    print(f"Machine: {describe()}")
    print(f"Command: .venv/bin/python benchmarks/decode_memory.py --side {args.side}\n")
    print("| image | file KB | peak MiB | reserved MiB | peak / reserved | decode s | decoded to |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, expression in CASES.items():
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT.format(side=args.side, expression=expression)],
            capture_output=True,
            text=True,
            cwd=REPO,
            check=True,
        )
        size, peak, reserved, seconds, width, height = done.stdout.split()
        peak_mib, reserved_mib = int(peak) / 2**20, int(reserved) / 2**20
        print(
            f"| {name} | {int(size) / 1000:,.0f} | {peak_mib:.1f} | {reserved_mib:.1f} | "
            f"{peak_mib / reserved_mib:.2f} | {float(seconds):.2f} | {width}x{height} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
