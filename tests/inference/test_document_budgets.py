"""What reading and decoding documents may cost (`inference.documents` under a `RequestBudget`): every
stream pypdf inflates is charged, bombs are refused per image, the work of a request's documents is
bounded as a whole, and only pypdf's errors become the client's."""

from __future__ import annotations

import zlib

import pypdf.filters
import pytest
from PIL import Image
from pypdf.errors import LimitReachedError
from pypdf.generic import EncodedStreamObject, NameObject

from cats_dogs_other.inference import documents
from cats_dogs_other.inference.budget import MemoryBudget, RequestBudget
from cats_dogs_other.inference.decode import ImageErrorKind, InvalidImageError
from cats_dogs_other.inference.documents import (
    MAX_XOBJECTS_VISITED,
    DocumentErrorKind,
    InvalidDocumentError,
    PdfRaster,
    inflating,
    read_document,
)
from cats_dogs_other.inference.limits import REQUEST_INFLATION_BYTES
from cats_dogs_other.settings import Settings
from tests.pdfs import (
    RawImage,
    flate_image,
    form_forest,
    hand_pdf,
    jpeg_image,
    object_stream_pdf,
    zero_images,
)

LIMITS = Settings().document_limits()
MiB = 1 << 20


def budget(seconds: float = 10.0, inflation: int = REQUEST_INFLATION_BYTES) -> RequestBudget:
    return RequestBudget(MemoryBudget(192 * MiB), seconds, inflation)


def flate_stream(data: bytes) -> EncodedStreamObject:
    stream = EncodedStreamObject()
    stream._data = zlib.compress(data)
    stream[NameObject("/Filter")] = NameObject("/FlateDecode")
    return stream


def test_every_stream_pypdf_decodes_goes_through_the_charged_decoder() -> None:
    # pypdf looks decode_stream_data up in pypdf.filters at each call: if a release stops doing so,
    # inflation is no longer charged, and this test says so.
    assert pypdf.filters.decode_stream_data is documents._charged_decode_stream_data
    with inflating(1 * MiB) as allowance:
        assert flate_stream(b"x" * 1000).get_data() == b"x" * 1000
    assert allowance.used == 1000


def test_a_stream_cannot_inflate_past_its_allowance() -> None:
    with inflating(10_000) as allowance, pytest.raises(LimitReachedError):
        flate_stream(b"\x00" * 1_000_000).get_data()
    assert allowance.used == 0
    with inflating(0), pytest.raises(LimitReachedError):  # pypdf reads a limit of 0 as "none"
        flate_stream(b"x").get_data()


def test_object_and_cross_reference_streams_read_with_a_document_are_charged_to_its_request() -> None:
    request = budget()
    assert read_document(object_stream_pdf(), LIMITS, request).pages == 1
    assert request.inflated_bytes > 0
    assert request.spent_seconds > 0


def test_a_document_whose_object_streams_inflate_past_its_reading_allowance_is_refused() -> None:
    # 400,000 objects: 3.2 MB of "[1 2 3]" and a 3.6 MB cross-reference stream, in 2.8 MB
    data = object_stream_pdf(extra_objects=400_000)
    assert len(data) < 10 * MiB
    with pytest.raises(InvalidDocumentError) as refused:
        read_document(data, LIMITS, budget())
    assert refused.value.kind is DocumentErrorKind.TOO_COMPLEX
    assert "inflate" in str(refused.value)


def test_sixty_four_zero_images_are_refused_as_bombs_each_beside_the_answered_ones() -> None:
    data = zero_images(64, 5000)
    assert len(data) < 5 * MiB
    bombs = read_document(data, LIMITS)
    assert [image.error.kind if image.error else None for image in bombs.images] == [
        ImageErrorKind.DECOMPRESSION_BOMB
    ] * 64
    assert "decompression bomb" in str(bombs.images[0].error)
    assert "5000x5000" in str(bombs.images[0].error)


def test_an_image_inflating_past_its_declared_samples_is_corrupt_not_allocated() -> None:
    lying = RawImage(
        b"/Width 100 /Height 100 /ColorSpace /DeviceRGB /BitsPerComponent 8 /Filter /FlateDecode",
        zlib.compress(b"\x00" * 50_000_000),  # 50 MB behind a 30,000-byte image
    )
    (image,) = read_document(hand_pdf([[lying]]), LIMITS).images
    assert isinstance(image.data, PdfRaster)
    request = budget()
    with pytest.raises(InvalidImageError, match="inflates past"):
        image.data.decode(448, request)
    assert request.inflated_bytes <= image.data.samples


def test_a_decoded_image_keeps_no_decoded_copy_of_its_samples() -> None:
    picture = flate_image(Image.new("RGB", (300, 200), (9, 8, 7)))
    (image,) = read_document(hand_pdf([[picture]]), LIMITS).images
    assert isinstance(image.data, PdfRaster)
    request = budget()
    assert image.data.decode(448, request).size == (300, 200)
    assert getattr(image.data.stream, "decoded_self", None) is None  # pypdf's cache died with the copy
    assert request.inflated_bytes == 300 * 200 * 3


def test_a_request_inflates_at_most_its_allowance_across_its_documents() -> None:
    picture = flate_image(Image.effect_noise((400, 400), 60).convert("RGB"))
    document = read_document(hand_pdf([[picture]]), LIMITS)
    raster = document.images[0].data
    assert isinstance(raster, PdfRaster)
    request = budget(inflation=raster.samples + 10)
    raster.decode(448, request)
    with pytest.raises(InvalidImageError) as refused:
        raster.decode(448, request)
    assert refused.value.kind is ImageErrorKind.DECOMPRESSION_BOMB
    assert "Send fewer images" in str(refused.value)


def test_slow_filters_are_refused_past_their_size() -> None:
    side = 1000  # 3 MB of samples, undone by a Python loop
    entries = (
        b"/Width %d /Height %d /ColorSpace /DeviceRGB /BitsPerComponent 8 /Filter /FlateDecode "
        b"/DecodeParms << /Predictor 15 /Columns %d /Colors 3 >>" % (side, side, side)
    )
    rows = b"".join(b"\x04" + bytes(range(256)) * 12 for _ in range(side))
    (image,) = read_document(hand_pdf([[RawImage(entries, zlib.compress(rows))]]), LIMITS).images
    assert image.error is not None
    assert image.error.kind is ImageErrorKind.TOO_MANY_PIXELS
    assert "a predictor" in str(image.error)


@pytest.mark.parametrize(("pages", "forms", "depth"), [(200, 4000, 1), (1, 30000, 1), (10, 2000, 6)])
def test_documents_naming_thousands_of_forms_are_refused_after_a_bounded_walk(
    pages: int, forms: int, depth: int
) -> None:
    request = budget()
    with pytest.raises(InvalidDocumentError) as refused:
        read_document(form_forest(pages, forms, depth), LIMITS, request)
    assert refused.value.kind is DocumentErrorKind.TOO_COMPLEX
    assert f"{MAX_XOBJECTS_VISITED:,}" in str(refused.value)


def test_the_time_budget_is_the_requests_across_its_documents() -> None:
    data = hand_pdf([[jpeg_image(Image.new("RGB", (32, 32), (i, 0, 0)))] for i in range(50)])
    request = budget(seconds=0.0)  # spent by the first step
    with pytest.raises(InvalidDocumentError) as first:
        read_document(data, LIMITS, request)
    assert first.value.kind is DocumentErrorKind.TOO_SLOW
    assert "stopped at page 0" in str(first.value)
    with pytest.raises(InvalidDocumentError, match="this one was not read") as second:
        read_document(data, LIMITS, request)
    assert second.value.kind is DocumentErrorKind.TOO_SLOW
    assert request.spent_seconds > 0


def test_a_bug_while_reading_is_raised_as_itself_not_as_the_clients_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def planted(*args: object) -> None:
        raise KeyError("a bug of ours")

    monkeypatch.setattr(documents, "_embedded", planted)
    with pytest.raises(KeyError, match="a bug of ours"):
        read_document(hand_pdf([[jpeg_image(Image.new("RGB", (8, 8)))]]), LIMITS)


def test_a_read_document_leaves_its_objects_to_reference_counting_not_the_cyclic_collector() -> None:
    """pypdf's reader cycles are broken once a document is read, so its thousands of objects are freed
    at once and the collector's full passes (which pause every thread) do not walk them."""
    import gc

    from pypdf.generic import PdfObject

    data = form_forest(20, 200)  # 200 forms and 20 pages: thousands of objects once parsed
    gc.collect()
    gc.disable()
    try:
        read_document(data, LIMITS)
        left = sum(isinstance(item, PdfObject) for item in gc.get_objects())
    finally:
        gc.enable()
    assert left < 50, f"{left} of the document's objects wait for the cyclic collector"
