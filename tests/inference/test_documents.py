"""Reading PDFs (`inference.documents`): the course's own documents, documents users' tools write, and
hostile ones. Only the project's two clear errors may come out: InvalidDocumentError for a document,
InvalidImageError for one of its images."""

from __future__ import annotations

import itertools
import re
import tracemalloc
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cats_dogs_other.inference.decode import InvalidImageError, decode_image
from cats_dogs_other.inference.documents import (
    DocumentErrorKind,
    ImagePosition,
    InvalidDocumentError,
    PdfRaster,
    is_pdf,
    read_document,
)
from cats_dogs_other.inference.limits import DEFAULT_MAX_PIXELS, DocumentLimits
from cats_dogs_other.settings import Settings
from tests.pdfs import (
    encrypted_pdf,
    flate_bomb,
    flate_content_bomb,
    flate_image,
    hand_pdf,
    jpeg_image,
    pillow_pdf,
)

LIMITS = Settings().document_limits()
MiB = 1 << 20


def gradient(width: int = 64, height: int = 48, shift: int = 0) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width].astype(np.uint16)
    pixels = np.stack([(x * 4 + shift) % 256, (y * 5) % 256, ((x + y) * 3) % 256], axis=2)
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def decoded(data: bytes | PdfRaster | None) -> Image.Image:
    assert data is not None
    return data.decode() if isinstance(data, PdfRaster) else decode_image(data)


@contextmanager
def python_allocation_peak() -> Iterator[list[float]]:
    """The peak of Python allocations in the block, in MiB (zlib's output buffers included)."""
    result: list[float] = []
    tracemalloc.start()
    try:
        yield result
    finally:
        result.append(tracemalloc.get_traced_memory()[1] / MiB)
        tracemalloc.stop()


def test_every_annotated_image_of_the_course_is_found_at_its_page_and_index(
    course_pdfs: list[Path], course_annotations: dict[str, str], dataset_dir: Path
) -> None:
    found: dict[str, bytes | PdfRaster | None] = {}
    for path in course_pdfs:
        document = read_document(path.read_bytes(), LIMITS)
        assert document.pages == len(document.images)  # one photo per page in the course's documents
        for image in document.to_classify:
            found[f"{path.stem}_page{image.position.page}_index{image.position.index}.png"] = image.data
        last = document.images[-1]
        # The course's documents repeat the first image on the last page: reported, not computed twice.
        assert last.duplicate_of == ImagePosition(0, 0), path.name
        assert last.data is None
    assert len(course_pdfs) == 23
    assert sorted(found) == sorted(course_annotations)
    for name, data in found.items():
        assert isinstance(data, bytes)
        assert data[:2] == b"\xff\xd8"
        extracted = np.asarray(decoded(data), dtype=np.int16)
        (labelled,) = dataset_dir.glob(f"*/{name}")
        course = np.asarray(Image.open(labelled).convert("RGB"), dtype=np.int16)
        assert extracted.shape == course.shape, name
        # The course decoded these JPEGs with another decoder: pixel levels differ slightly, never more.
        assert np.abs(extracted - course).mean() < 2.0, name


def test_images_pillow_writes_are_read_one_per_page() -> None:
    pictures = [gradient(64, 48), gradient(30, 70, shift=9), gradient(128, 16, shift=50)]
    data = pillow_pdf(pictures)
    assert is_pdf(data)
    document = read_document(data, LIMITS)
    assert document.pages == 3
    assert [(i.position.page, i.position.index, i.width, i.height) for i in document.images] == [
        (0, 0, 64, 48),
        (1, 0, 30, 70),
        (2, 0, 128, 16),
    ]
    for image, picture in zip(document.images, pictures, strict=True):
        pixels = np.asarray(decoded(image.data), dtype=np.int16)
        assert np.abs(pixels - np.asarray(picture, dtype=np.int16)).mean() < 4  # JPEG, quality 75


def test_images_of_a_page_are_numbered_in_resource_order_and_a_repeat_is_a_duplicate() -> None:
    first, second = jpeg_image(gradient()), flate_image(gradient(shift=100))
    data = hand_pdf([[first, second], [], [flate_image(gradient(shift=100)), jpeg_image(gradient())]])
    document = read_document(data, LIMITS)
    assert document.pages == 3
    positions = [(i.position.page, i.position.index) for i in document.images]
    assert positions == [(0, 0), (0, 1), (2, 0), (2, 1)]
    assert [i.duplicate_of for i in document.images] == [None, None, ImagePosition(0, 1), ImagePosition(0, 0)]
    assert len(document.to_classify) == 2


def test_a_flate_image_is_decoded_by_the_library_to_its_exact_pixels() -> None:
    picture = gradient(90, 60)
    (image,) = read_document(hand_pdf([[flate_image(picture)]]), LIMITS).images
    assert isinstance(image.data, PdfRaster)
    assert np.array_equal(np.asarray(image.data.decode()), np.asarray(picture))


def test_an_image_with_a_soft_mask_is_decoded_over_white() -> None:
    alpha = Image.new("L", (40, 30), 0)
    alpha.paste(255, (0, 0, 20, 30))  # left half opaque, right half transparent
    black = flate_image(Image.new("RGB", (40, 30)), soft_mask=flate_image(alpha))
    (image,) = read_document(hand_pdf([[black]]), LIMITS).images
    assert image.error is None
    assert isinstance(image.data, PdfRaster)
    pixels = np.asarray(image.data.decode())
    assert tuple(pixels[15, 5]) == (0, 0, 0)  # opaque black
    assert tuple(pixels[15, 35]) == (255, 255, 255)  # transparent: the page's white


def test_a_soft_mask_obeys_the_pixel_limit_too() -> None:
    tiny = flate_image(Image.new("RGB", (4, 4)), soft_mask=flate_bomb(10000, 10000))
    (image,) = read_document(hand_pdf([[tiny]]), LIMITS).images
    assert image.data is None
    assert image.error is not None
    assert image.error.kind == "too_many_pixels"


def test_a_30000_square_flate_bomb_is_refused_from_its_dictionary_without_allocating() -> None:
    data = hand_pdf([[flate_bomb(30000, 30000)]])
    assert len(data) < 4 * MiB  # 2.7 GB of samples
    with python_allocation_peak() as peak:
        (image,) = read_document(data, LIMITS).images
    assert image.data is None
    assert image.error is not None
    assert image.error.kind == "too_many_pixels"
    assert "30000x30000" in str(image.error)
    assert (image.width, image.height) == (30000, 30000)
    assert peak[0] < 3 * len(data) / MiB + 8, f"{peak[0]:.0f} MiB"


def test_a_content_stream_that_inflates_to_a_gigabyte_is_never_parsed() -> None:
    data = hand_pdf([[jpeg_image(gradient())]], content=flate_content_bomb(1 << 30))
    with python_allocation_peak() as peak:
        document = read_document(data, LIMITS)
    assert len(document.images) == 1
    assert peak[0] < 3 * len(data) / MiB + 8, f"{peak[0]:.0f} MiB"


def test_too_many_pages_and_images_are_refused_naming_their_setting() -> None:
    limits = DocumentLimits(max_pages=3, max_images=2, max_pixels=DEFAULT_MAX_PIXELS, seconds=10)
    with pytest.raises(InvalidDocumentError, match="MAX_PDF_PAGES=3") as pages:
        read_document(hand_pdf([[]] * 4), limits)
    assert pages.value.kind is DocumentErrorKind.TOO_MANY_PAGES
    three = [[jpeg_image(gradient(shift=k))] for k in range(3)]
    with pytest.raises(InvalidDocumentError, match="MAX_IMAGES_PER_DOCUMENT=2") as images:
        read_document(hand_pdf(three), limits)
    assert images.value.kind is DocumentErrorKind.TOO_MANY_IMAGES
    assert len(read_document(hand_pdf(three[:2]), limits).images) == 2


def test_a_document_over_its_time_budget_stops_with_a_clear_error() -> None:
    limits = DocumentLimits(max_pages=200, max_images=64, max_pixels=DEFAULT_MAX_PIXELS, seconds=1e-9)
    with pytest.raises(InvalidDocumentError, match="PDF_TIME_BUDGET_SECONDS") as slow:
        read_document(hand_pdf([[jpeg_image(gradient())]] * 3), limits)
    assert slow.value.kind is DocumentErrorKind.TOO_SLOW


def test_a_password_protected_document_is_refused_as_encrypted() -> None:
    with pytest.raises(InvalidDocumentError, match="encrypted with a password") as refused:
        read_document(encrypted_pdf(gradient(), user_password="secret"), LIMITS)
    assert refused.value.kind is DocumentErrorKind.ENCRYPTED


def test_a_document_with_only_an_owner_password_is_read() -> None:
    document = read_document(encrypted_pdf(gradient(), user_password=""), LIMITS)
    assert [(i.width, i.height) for i in document.images] == [(64, 48)]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"%PDF-1.7\n", id="header-only"),
        pytest.param(b"%PDF-1.4\n" + b"\x00" * 5000, id="zeros"),
        pytest.param(b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R", id="cut-in-an-object"),
    ],
)
def test_malformed_documents_are_one_clear_error(data: bytes) -> None:
    with pytest.raises(InvalidDocumentError, match="malformed or truncated") as malformed:
        read_document(data, LIMITS)
    assert malformed.value.kind is DocumentErrorKind.MALFORMED


def test_a_truncated_course_document_is_malformed(course_pdfs: list[Path]) -> None:
    data = course_pdfs[0].read_bytes()
    with pytest.raises(InvalidDocumentError) as truncated:
        read_document(data[: len(data) // 2], LIMITS)
    assert truncated.value.kind is DocumentErrorKind.MALFORMED


def test_a_document_without_images_has_none() -> None:
    document = read_document(hand_pdf([[], []]), LIMITS)
    assert document.pages == 2
    assert document.images == []


def test_lies_in_an_image_dictionary_are_that_images_error() -> None:
    lying = jpeg_image(gradient())
    no_size = replace(lying, entries=lying.entries.replace(b"/Width 64", b"/Width -1"))
    short = flate_image(gradient())  # declares 10 times the samples it holds
    too_big = replace(
        short, entries=short.entries.replace(b"/Width 64 /Height 48", b"/Width 640 /Height 480")
    )
    document = read_document(hand_pdf([[no_size, too_big, jpeg_image(gradient(shift=3))]]), LIMITS)
    assert document.images[0].error is not None
    assert "/Width" in str(document.images[0].error)
    raster = document.images[1].data
    assert isinstance(raster, PdfRaster)
    with pytest.raises(InvalidImageError, match="cannot be decoded"):
        raster.decode()
    assert document.images[2].data is not None


def test_documents_read_at_once_from_many_threads_agree(course_pdfs: list[Path]) -> None:
    payloads = [path.read_bytes() for path in course_pdfs] * 4

    def summary(data: bytes) -> list[tuple[int, int, int, int, bool]]:
        document = read_document(data, LIMITS)
        return [
            (i.position.page, i.position.index, i.width, i.height, i.duplicate_of is None)
            for i in document.images
        ]

    alone = [summary(data) for data in payloads]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(summary, payloads))
    assert together == alone


def _mutation_corpus() -> list[bytes]:
    import glob

    from tests.conftest import PDFS_DIR

    corpus = [hand_pdf([[jpeg_image(gradient()), flate_image(gradient(shift=40))]]), pillow_pdf([gradient()])]
    corpus += [Path(path).read_bytes() for path in sorted(glob.glob(str(PDFS_DIR / "*.pdf")))[:3]]
    return corpus


# What a hostile writer puts where a value belongs: wrong types, dangling and self references, nesting.
TOKENS = [
    *(b"null", b"/X", b"-1", b"0", b"99999999999", b"1.5", b"[", b"]", b"<<", b">>", b"[]", b"<< >>"),
    *(b"999 0 R", b"1 0 R", b"(s)", b"true", b"/Image", b"/Form", b"/FlateDecode", b"/Indexed"),
]


PDF_TOKEN = re.compile(rb"<<|>>|/?[^\s<>\[\]()/]+")
STREAM_DATA = re.compile(rb"stream\r?\n.*?endstream", re.DOTALL)


# The keys this project reads itself (the rest is pypdf's): a "value" edit replaces what follows one.
READ_KEYS = {b"/Width", b"/Height", b"/Resources", b"/XObject", b"/Subtype", b"/Filter", b"/ColorSpace",
             b"/BitsPerComponent", b"/SMask", b"/Mask", b"/DecodeParms", b"/ImageMask", b"/N"}  # fmt: skip


def _object_tokens(data: bytes, values_only: bool = False) -> list[tuple[int, int]]:
    """Where the tokens of the objects' dictionaries are (after the header, before the cross-reference
    table, outside stream data); with `values_only`, the values of the keys in READ_KEYS."""
    end = max(16, data.rfind(b"xref"))
    streams = [match.span() for match in STREAM_DATA.finditer(data, 16, end)]
    gaps = zip([16, *(stop for _, stop in streams)], [*(start for start, _ in streams), end], strict=True)
    tokens = [match for start, stop in gaps for match in PDF_TOKEN.finditer(data, start, stop)]
    if not values_only:
        return [token.span() for token in tokens]
    return [value.span() for key, value in itertools.pairwise(tokens) if key.group() in READ_KEYS]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    source=st.sampled_from(_mutation_corpus()),
    edits=st.lists(
        st.tuples(
            st.floats(0, 1),
            st.sampled_from(["flip", "delete", "insert", "truncate", "token", "value", "value"]),
            st.binary(min_size=1, max_size=8),
            st.sampled_from(TOKENS),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_mutated_documents_only_ever_raise_the_projects_errors(
    source: bytes, edits: list[tuple[float, str, bytes, bytes]]
) -> None:
    """Byte edits anywhere, and token swaps inside the objects (header and trailer kept, so that most
    mutants still parse and reach this project's code, where a missing check would show as a bug)."""
    data = bytearray(source)
    for where, how, payload, token in edits:
        at = int(where * (len(data) - 1))
        if how == "flip":
            data[at : at + len(payload)] = payload
        elif how == "delete":
            del data[at : at + len(payload) * 50]
        elif how == "insert":
            data[at:at] = payload
        elif how == "truncate":
            del data[at:]
        else:
            spans = _object_tokens(bytes(data), values_only=how == "value")
            if spans:
                start, end = spans[int(where * (len(spans) - 1))]
                data[start:end] = token
    try:
        document = read_document(bytes(data), LIMITS)
    except InvalidDocumentError:
        return
    for image in document.to_classify:
        with suppress(InvalidImageError):
            decoded(image.data).load()
