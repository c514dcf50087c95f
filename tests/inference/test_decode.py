"""Decoding: every common format and colour mode, EXIF orientation, and one clear error for bad input."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from cats_dogs_other.inference.budget import MemoryBudget
from cats_dogs_other.inference.classifier import ImageClassifier
from cats_dogs_other.inference.decode import (
    ImageErrorKind,
    InvalidImageError,
    _webp_size,
    decode_image,
    is_heif,
)
from cats_dogs_other.inference.limits import DEFAULT_MAX_PIXELS
from tests.hostile import decode_peak, png_with_text
from tests.images import encode, heic, png_declaring, png_image


@pytest.fixture(scope="module")
def cat_image(sample_files: dict[str, Path]) -> Image.Image:
    return Image.open(sample_files["Cat"]).convert("RGB")


@pytest.mark.parametrize(
    ("fmt", "params"),
    [
        ("PNG", {}),
        ("JPEG", {"quality": 92}),
        ("WEBP", {"quality": 90}),
        ("AVIF", {"quality": 90}),
        ("BMP", {}),
        ("TIFF", {}),
        ("TIFF", {"compression": "tiff_lzw"}),
        ("GIF", {}),
    ],
)
def test_every_common_format_is_classified_like_the_original(
    classifier: ImageClassifier, cat_image: Image.Image, fmt: str, params: dict[str, object]
) -> None:
    (original,) = classifier.predict([encode(cat_image, "PNG")])
    (converted,) = classifier.predict([encode(cat_image, fmt, **params)])
    assert converted.prediction == original.prediction == "Cat"
    assert abs(sum(converted.values) - 1.0) < 1e-5


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "1", "I", "F"])
def test_every_colour_mode_decodes_to_rgb(cat_image: Image.Image, mode: str) -> None:
    source = cat_image.convert(mode)
    fmt = "TIFF" if mode in {"CMYK", "I", "F"} else "PNG"
    decoded = decode_image(encode(source, fmt))
    assert decoded.mode == "RGB"
    assert decoded.size == cat_image.size


def test_grayscale_keeps_its_brightness(cat_image: Image.Image) -> None:
    gray = cat_image.convert("L")
    decoded = np.asarray(decode_image(encode(gray, "PNG")))
    assert np.array_equal(decoded[..., 0], np.asarray(gray))


def test_sixteen_bit_grayscale_is_scaled_not_clipped(cat_image: Image.Image) -> None:
    gray8 = np.asarray(cat_image.convert("L"), dtype=np.uint16)
    gray16 = Image.fromarray((gray8 * 257).astype("<u2"))
    assert gray16.mode.startswith("I;16")
    decoded = np.asarray(decode_image(encode(gray16, "PNG")), dtype=int)
    assert np.abs(decoded[..., 0] - gray8).max() <= 1


def test_cmyk_jpeg_is_classified(classifier: ImageClassifier, cat_image: Image.Image) -> None:
    (result,) = classifier.predict([encode(cat_image.convert("CMYK"), "JPEG", quality=95)])
    assert result.prediction == "Cat"


def test_transparent_pixels_become_white() -> None:
    clear = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    decoded = np.asarray(decode_image(encode(clear, "PNG")))
    assert (decoded == 255).all()


def test_palette_with_transparency_becomes_white() -> None:
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0] * 256)
    decoded = np.asarray(decode_image(encode(image, "PNG", transparency=0)))
    assert (decoded == 255).all()


def test_gif_first_frame_is_used(classifier: ImageClassifier, sample_files: dict[str, Path]) -> None:
    cat = Image.open(sample_files["Cat"]).convert("RGB").resize((224, 224))
    dog = Image.open(sample_files["Dog"]).convert("RGB").resize((224, 224))
    other = Image.open(sample_files["Other"]).convert("RGB").resize((224, 224))
    animated = encode(cat, "GIF", save_all=True, append_images=[dog, other], duration=100, loop=0)
    assert Image.open(io.BytesIO(animated)).n_frames == 3
    (result,) = classifier.predict([animated])
    assert result.prediction == "Cat"


# Where each format keeps its orientation: an EXIF block (JPEG's APP1, PNG's eXIf, WebP's EXIF chunk,
# TIFF's own tag), AVIF's irot/imir boxes (Pillow writes them from the EXIF tag and reads them back as
# one), HEIC's irot/imir boxes (libheif applies them and clears the EXIF tag, so nothing turns twice).
ORIENTED_FORMATS = {
    "JPEG": lambda image, exif: encode(image, "JPEG", quality=95, exif=exif),
    "PNG": lambda image, exif: encode(image, "PNG", exif=exif),
    "WEBP": lambda image, exif: encode(image, "WEBP", quality=95, exif=exif),
    "TIFF": lambda image, exif: encode(image, "TIFF", exif=exif),
    "AVIF": lambda image, exif: encode(image, "AVIF", quality=95, exif=exif),
    "HEIC": lambda image, exif: heic(image, quality=95, exif=exif),
}


@pytest.mark.parametrize("fmt", sorted(ORIENTED_FORMATS))
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_honoured_in_every_format(
    classifier: ImageClassifier, cat_image: Image.Image, orientation: int, fmt: str
) -> None:
    # Store the pixels rotated and let the orientation say how to turn them upright again, as cameras do.
    stored = {
        3: cat_image.transpose(Image.Transpose.ROTATE_180),
        6: cat_image.transpose(Image.Transpose.ROTATE_90),
        8: cat_image.transpose(Image.Transpose.ROTATE_270),
    }[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = ORIENTED_FORMATS[fmt](stored, exif.tobytes())
    decoded = decode_image(data)
    assert decoded.size == cat_image.size
    upright = np.asarray(decoded, dtype=float)
    assert np.abs(upright - np.asarray(cat_image, dtype=float)).mean() < 6  # lossy coding noise only
    (result,) = classifier.predict([data])
    (reference,) = classifier.predict([encode(cat_image, "PNG")])
    assert result.prediction == reference.prediction
    assert np.abs(np.array(result.values) - np.array(reference.values)).max() < 0.05


def test_heic_is_classified_like_the_original(classifier: ImageClassifier, cat_image: Image.Image) -> None:
    data = heic(cat_image)
    assert is_heif(data)
    assert Image.open(io.BytesIO(data)).format == "HEIF"
    (original,) = classifier.predict([encode(cat_image, "PNG")])
    (converted,) = classifier.predict([data])
    assert converted.prediction == original.prediction == "Cat"
    assert np.abs(np.array(converted.values) - np.array(original.values)).max() < 0.05


def test_avif_is_not_mistaken_for_heic(cat_image: Image.Image) -> None:
    assert not is_heif(encode(cat_image, "AVIF"))
    assert not is_heif(encode(cat_image, "PNG"))


# A process where pi-heif cannot be imported: the service as `pip install cats-dogs-other` gives it.
_WITHOUT_HEIF = """
import sys
sys.modules["pi_heif"] = None  # `import pi_heif` now raises ImportError, as when it is not installed
from cats_dogs_other.inference.decode import HEIF_AVAILABLE, UNSUPPORTED_DETAIL
from cats_dogs_other.inference.decode import InvalidImageError, decode_image
assert not HEIF_AVAILABLE
try:
    decode_image(sys.stdin.buffer.read())
except InvalidImageError as exc:
    print(exc.kind.value)
    print(exc)
print(UNSUPPORTED_DETAIL)
"""


def test_heic_without_the_extra_is_refused_with_a_detail_naming_it(cat_image: Image.Image) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_HEIF],
        input=heic(cat_image),
        capture_output=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    kind, detail, generic = done.stdout.decode().splitlines()
    assert kind == "unsupported"
    assert "HEIC" in detail
    assert "pip install 'cats-dogs-other[heic]'" in detail
    assert "HEIC" not in generic  # the list of what this installation reads does not promise it


def test_zero_bytes_is_empty() -> None:
    with pytest.raises(InvalidImageError) as caught:
        decode_image(b"")
    assert caught.value.kind is ImageErrorKind.EMPTY


@pytest.mark.parametrize(
    "data",
    [
        b"hello, this is plain text\n",
        b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"><rect width="9" height="9"/></svg>',
        b"<!doctype html><html><body><img src=x></body></html>",
        b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + bytes(64),  # a zip archive
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n",
        bytes(range(256)) * 4,
    ],
    ids=["text", "svg", "html", "zip", "pdf", "random"],
)
def test_non_images_are_unsupported(data: bytes) -> None:
    with pytest.raises(InvalidImageError) as caught:
        decode_image(data)
    assert caught.value.kind is ImageErrorKind.UNSUPPORTED
    assert "Not a supported image" in str(caught.value)


def test_a_format_pillow_reads_but_we_do_not_serve_is_unsupported(cat_image: Image.Image) -> None:
    with pytest.raises(InvalidImageError) as caught:
        decode_image(encode(cat_image.resize((32, 32)), "ICO"))
    assert caught.value.kind is ImageErrorKind.UNSUPPORTED


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"])
def test_truncated_images_are_corrupt(cat_image: Image.Image, fmt: str) -> None:
    data = encode(cat_image, fmt)
    with pytest.raises(InvalidImageError) as caught:
        decode_image(data[: len(data) // 2])
    assert caught.value.kind in {ImageErrorKind.CORRUPT, ImageErrorKind.UNSUPPORTED}


def test_corrupt_pixel_data_is_corrupt(cat_image: Image.Image) -> None:
    data = bytearray(encode(cat_image, "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 8 : idat + 400] = os.urandom(392)
    with pytest.raises(InvalidImageError) as caught:
        decode_image(bytes(data))
    assert caught.value.kind is ImageErrorKind.CORRUPT


def test_huge_declared_canvas_is_refused_before_decoding() -> None:
    bomb = png_declaring(40_000, 40_000)
    assert len(bomb) < 200
    with pytest.raises(InvalidImageError) as caught:
        decode_image(bomb)
    assert caught.value.kind is ImageErrorKind.TOO_MANY_PIXELS
    assert "1,600,000,000 pixels" in str(caught.value)
    assert f"{DEFAULT_MAX_PIXELS:,}" in str(caught.value)


def test_canvas_above_limit_but_below_pillow_bomb_guard_names_its_size() -> None:
    with pytest.raises(InvalidImageError) as caught:
        decode_image(png_declaring(9_000, 8_000))
    assert caught.value.kind is ImageErrorKind.TOO_MANY_PIXELS
    assert "9000x8000 = 72,000,000 pixels" in str(caught.value)


def test_pixel_limit_is_configurable(cat_image: Image.Image) -> None:
    data = encode(cat_image, "PNG")
    width, height = cat_image.size
    assert decode_image(data, max_pixels=width * height).size == cat_image.size
    with pytest.raises(InvalidImageError) as caught:
        decode_image(data, max_pixels=width * height - 1)
    assert caught.value.kind is ImageErrorKind.TOO_MANY_PIXELS


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_give_an_image_or_the_clear_error(data: bytes) -> None:
    try:
        outcome = decode_image(data).mode
    except InvalidImageError as exc:
        outcome = str(exc)
    assert outcome == "RGB" or outcome.endswith(".")  # an image, or an error that explains itself


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=8, max_value=300), st.binary(min_size=1, max_size=64))
def test_damaged_real_png_gives_an_image_or_the_clear_error(offset: int, junk: bytes) -> None:
    base = encode(Image.new("RGB", (40, 30), (200, 10, 10)), "PNG")
    damaged = base[:offset] + junk + base[offset + len(junk) :]
    with contextlib.suppress(InvalidImageError):
        assert decode_image(damaged).mode == "RGB"


# Large images: reduced to what the model needs, with no second full-size copy and the same pixels.


def _random_image(mode: str, size: tuple[int, int], seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    width, height = size
    if mode in {"I;16", "I", "F"}:
        top = {"I;16": 65535, "I": 40000, "F": 300.0}[mode]
        values = rng.integers(0, top, (height, width)).astype({"I;16": "<u2", "I": "<i4", "F": "<f4"}[mode])
        return Image.fromarray(values, mode=None).convert(mode) if mode != "I;16" else Image.fromarray(values)
    rgba = Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8), "RGBA")
    if mode == "P":
        return rgba.convert("RGB").quantize(64)
    return rgba.convert(mode)


@pytest.mark.parametrize(
    ("mode", "fmt", "params"),
    [
        ("RGB", "PNG", {}),
        ("RGBA", "PNG", {}),
        ("LA", "PNG", {}),
        ("P", "PNG", {"transparency": 3}),
        ("P", "PNG", {}),
        ("1", "PNG", {}),
        ("L", "PNG", {}),
        ("I;16", "PNG", {}),
        ("I", "TIFF", {}),
        ("F", "TIFF", {}),
        ("CMYK", "TIFF", {}),
    ],
)
def test_large_images_are_reduced_to_exactly_the_pixels_of_converting_first(
    mode: str, fmt: str, params: dict[str, object]
) -> None:
    # 1801x1399: factors 4 and 3 for a 448 minimum, partial blocks at the right and bottom edges,
    # and several strips, so every seam of the strip-by-strip path is crossed.
    data = encode(_random_image(mode, (1801, 1399)), fmt, **params)
    reduced = decode_image(data, min_side=448)
    reference = decode_image(data).reduce((4, 3))  # the whole image converted first, then reduced
    assert reduced.mode == "RGB"
    assert reduced.size == reference.size == (451, 467)
    assert np.array_equal(np.asarray(reduced), np.asarray(reference))


def test_a_large_photo_keeps_at_least_the_minimum_side_and_turns_upright(cat_image: Image.Image) -> None:
    big = cat_image.resize((2400, 1800))
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(big.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=90, exif=exif.tobytes())
    decoded = decode_image(data, min_side=448)
    width, height = decoded.size
    assert width > height  # upright again: stored 1800x2400, shown 2400x1800
    assert min(width, height) >= 448
    assert max(width, height) < 2 * 448 * 2
    assert width / height == pytest.approx(2400 / 1800, rel=0.02)


@pytest.mark.parametrize(
    ("mode", "params"),
    [("RGB", {"quality": 80}), ("RGB", {"lossless": True}), ("RGBA", {"quality": 80})],
    ids=["lossy", "lossless", "alpha"],
)
def test_webp_size_is_read_from_the_header_before_opening(
    cat_image: Image.Image, mode: str, params: dict[str, object]
) -> None:
    image = cat_image.convert(mode).resize((1234, 567))
    data = encode(image, "WEBP", **params)
    assert _webp_size(data) == (1234, 567)
    animated = encode(image, "WEBP", save_all=True, append_images=[image.rotate(90)], **params)
    assert _webp_size(animated) == (1234, 567)


def test_png_text_is_capped_at_4_mib_and_a_little_text_is_fine() -> None:
    with pytest.raises(InvalidImageError) as caught:
        decode_image(png_with_text(chunks=5))  # 5 MB of text
    assert caught.value.kind is ImageErrorKind.UNSUPPORTED
    assert decode_image(png_with_text(chunks=2)).size == (8, 8)


def test_a_failed_decode_keeps_nothing_of_its_frames() -> None:
    with pytest.raises(InvalidImageError) as caught:
        decode_image(png_with_text(chunks=5))
    detached = caught.value.detached()
    assert (detached.kind, str(detached)) == (caught.value.kind, str(caught.value))
    assert detached.__traceback__ is None
    assert caught.value.__traceback__ is None
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None


def test_an_image_that_alone_exceeds_the_decoding_budget_is_refused_with_numbers() -> None:
    data = png_image(4000, 4000, bit_depth=16, color_type=0)
    with pytest.raises(InvalidImageError) as caught:
        decode_image(data, budget=MemoryBudget(40 << 20))
    assert caught.value.kind is ImageErrorKind.TOO_MANY_PIXELS
    assert "4000x4000 PNG" in str(caught.value)
    assert "over the decoding budget of 42 MB" in str(caught.value)
    assert decode_image(data, min_side=448, budget=MemoryBudget(128 << 20)).size == (500, 500)


# One case per decoder, run in a fresh process so that its peak resident memory (VmHWM, reset through
# /proc/self/clear_refs) is this decode's and nothing else's.
PEAK_CASES = {
    "png 16-bit gray": "png_image(N, N, bit_depth=16, color_type=0)",
    "png rgba": "png_image(N, N, bit_depth=8, color_type=6)",
    "png rgba interlaced": "png_image(N, N, bit_depth=8, color_type=6, interlace=True)",
    "png palette": "png_image(N, N, bit_depth=8, color_type=3)",
    "jpeg progressive": "encode(Image.new('RGB', (N, N), (9, 99, 199)), 'JPEG', progressive=True)",
    "webp": "encode(Image.new('RGB', (N, N), (9, 99, 199)), 'WEBP', quality=80)",
    "avif": "encode(Image.effect_noise((N, N), 60).convert('RGB'), 'AVIF', quality=80, subsampling='4:4:4')",
    "heic": "heic(Image.new('RGB', (N, N), (9, 99, 199)))",
    "tiff": "encode(Image.new('RGBA', (N, N)), 'TIFF', compression='tiff_deflate')",
    "gif": "encode(Image.new('P', (N, N)), 'GIF')",
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(PEAK_CASES))
def test_the_reserved_bytes_cover_the_real_peak_memory_of_decoding(case: str) -> None:
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip(reason="needs Linux /proc to read a process's peak memory")
    probe = decode_peak(PEAK_CASES[case], side=4000)
    peak, reserved = probe.peak / 2**20, probe.reserved / 2**20
    assert peak <= reserved, f"{case}: decoding peaked at {peak:.1f} MiB, {reserved:.1f} MiB were reserved"
    assert peak > reserved / 10, f"{case}: {reserved:.1f} MiB reserved is far above the {peak:.1f} MiB used"


def _with_coded_size(data: bytes, side: int) -> bytes:
    at = data.index(b"\x00\x00\x00\x14ispe")
    return data[: at + 12] + side.to_bytes(4, "big") * 2 + data[at + 20 :]


def test_heic_is_checked_at_its_coded_size_not_its_cropped_one() -> None:
    # A 64x48 HEIC is coded as 64x64 and cropped (`clap`): Pillow is told 64x48. A file whose `ispe`
    # declares a huge coded size behind a small crop is refused before libheif allocates it.
    data = heic(Image.new("RGB", (64, 48), (9, 99, 199)))
    assert Image.open(io.BytesIO(data)).size == (64, 48)
    assert decode_image(data).size == (64, 48)
    with pytest.raises(InvalidImageError) as caught:
        decode_image(_with_coded_size(data, 30000))
    assert caught.value.kind is ImageErrorKind.TOO_MANY_PIXELS
    assert "30000x30000" in str(caught.value)
    with pytest.raises(InvalidImageError) as caught:
        decode_image(_with_coded_size(data, 6000), budget=MemoryBudget(192 << 20))
    assert caught.value.kind is ImageErrorKind.TOO_MANY_PIXELS
    assert "6000x6000 HEIF" in str(caught.value)


def test_a_heic_whose_bitstream_disagrees_with_its_header_is_corrupt() -> None:
    data = _with_coded_size(heic(Image.new("RGB", (64, 48), (9, 99, 199))), 640)
    with pytest.raises(InvalidImageError) as caught:
        decode_image(data)
    assert caught.value.kind is ImageErrorKind.CORRUPT
