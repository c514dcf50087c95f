"""Peak memory of decoding one large image, per decoder, against what the decoder reserves (not in CI).

    .venv/bin/python benchmarks/decode_memory.py [--side 6324]

Each case runs in a fresh process: its peak RSS (VmHWM, reset through /proc/self/clear_refs just
before) minus its RSS before, against the bytes `decode_image` reserved from the decode budget for it,
and the time taken. The reservation must cover the peak; tests/inference/test_decode.py checks the same
at a smaller size. Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.hostile import decode_peak

from machine import describe

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
        probe = decode_peak(expression, args.side)
        peak_mib, reserved_mib = probe.peak / 2**20, probe.reserved / 2**20
        width, height = probe.decoded_size
        print(
            f"| {name} | {probe.file_bytes / 1000:,.0f} | {peak_mib:.1f} | {reserved_mib:.1f} | "
            f"{peak_mib / reserved_mib:.2f} | {probe.seconds:.2f} | {width}x{height} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
