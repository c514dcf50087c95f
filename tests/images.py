"""Helpers that make test images from real ones."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def png_declaring(width: int, height: int, bit_depth: int = 1, color_type: int = 0) -> bytes:
    """A tiny, valid-looking PNG whose header declares a huge canvas (a decompression bomb's shape)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    # A few rows of zeros; a decoder that ignored the pixel limit would allocate the whole canvas.
    data = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


# Adam7 interlacing: seven passes, each (first column, first row, column step, row step).
ADAM7_PASSES = [
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
]


def png_image(
    width: int,
    height: int,
    bit_depth: int = 8,
    color_type: int = 6,
    interlace: bool = False,
    flat: bool = False,
) -> bytes:
    """A real, valid PNG of any size, small on the wire (a repeated gradient row, or one colour with
    `flat`: ~1000x smaller than its pixels), built row by row so that making a 40-megapixel image costs
    the test no more memory than a row.

    color_type: 0 gray, 2 RGB, 3 palette, 4 gray+alpha, 6 RGBA (the PNG specification's numbers).
    """
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color_type]
    compressor = zlib.compressobj(9)
    parts = []
    for x0, y0, dx, dy in ADAM7_PASSES if interlace else [(0, 0, 1, 1)]:
        columns, rows = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if columns <= 0 or rows <= 0:
            continue
        row_bytes = (columns * channels * bit_depth + 7) // 8
        row = b"\x00" + (b"\x80" * row_bytes if flat else bytes(i % 251 for i in range(row_bytes)))
        parts.extend(compressor.compress(row) for _ in range(rows))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, int(interlace))
    palette = chunk(b"PLTE", bytes(range(256)) * 3) if color_type == 3 else b""
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + palette
        + chunk(b"IDAT", b"".join(parts))
        + chunk(b"IEND", b"")
    )


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def heic(image: Image.Image, quality: int = 90, exif: bytes | None = None, fast: bool = True) -> bytes:
    """An HEIC file, encoded by pillow-heif (a test-only dependency: its wheels carry the x265 encoder)
    without registering it with Pillow, so that decoding still goes through the service's pi-heif.
    `fast`: x265's fastest preset (its default took 11 s for 12 MP); benchmarks keep the default."""
    import pillow_heif

    buffer = io.BytesIO()
    options: dict[str, object] = {"enc_params": {"preset": "ultrafast"}} if fast else {}
    if exif:
        options["exif"] = exif
    pillow_heif.from_pillow(image).save(buffer, quality=quality, **options)
    return buffer.getvalue()


def phone_photo(image: Image.Image, size: tuple[int, int], noise_level: int = 10) -> Image.Image:
    """The image at a phone camera's size with sensor-like noise, which sets the file's weight: level 10
    makes a quality-92 JPEG of 4 MB (a phone's), level 3 AVIF and HEIC files of 0.6-2 MB."""
    import numpy as np

    big = np.asarray(image.convert("RGB").resize(size, Image.Resampling.BICUBIC), dtype=np.int16)
    shape = (size[1], size[0], 1)
    noise = np.random.default_rng(7).integers(-noise_level, noise_level + 1, shape, dtype=np.int16)
    return Image.fromarray(np.clip(big + noise, 0, 255).astype(np.uint8))
