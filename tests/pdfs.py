"""PDFs the tests write themselves: with Pillow (what a user's tools produce) and by hand (what an
attacker writes: bombs, lies in dictionaries, broken structure)."""

from __future__ import annotations

import functools
import io
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PIL import Image


@dataclass(frozen=True)
class RawImage:
    """An image XObject as it will be written: its dictionary entries (without /Length) and stream."""

    entries: bytes
    stream: bytes
    soft_mask: RawImage | None = None


def pillow_pdf(images: Sequence[Image.Image]) -> bytes:
    """One image per page, as Pillow writes it (RGB as JPEG, the way most tools embed photos)."""
    out = io.BytesIO()
    images[0].save(out, format="PDF", save_all=True, append_images=list(images[1:]))
    return out.getvalue()


def jpeg_image(image: Image.Image, quality: int = 90) -> RawImage:
    data = io.BytesIO()
    image.convert("RGB").save(data, format="JPEG", quality=quality)
    width, height = image.size
    entries = b"/Width %d /Height %d /ColorSpace /DeviceRGB /BitsPerComponent 8 /Filter /DCTDecode"
    return RawImage(entries % (width, height), data.getvalue())


def flate_image(image: Image.Image, soft_mask: RawImage | None = None) -> RawImage:
    """8-bit RGB or grey samples, Flate-compressed: how PNG-sourced pictures are usually embedded."""
    mode = "L" if image.mode == "L" else "RGB"
    pixels = image.convert(mode)
    space = b"/DeviceGray" if mode == "L" else b"/DeviceRGB"
    entries = b"/Width %d /Height %d /ColorSpace %s /BitsPerComponent 8 /Filter /FlateDecode"
    return RawImage(entries % (*pixels.size, space), zlib.compress(pixels.tobytes(), 6), soft_mask)


@functools.cache  # 7 s to compress 2.7 GB: once per test session
def flate_bomb(width: int, height: int) -> RawImage:
    """A flat grey image of width x height RGB samples: 2.7 GB of samples for 30000x30000 fit in 3 MB."""
    compressor = zlib.compressobj(9)
    row = b"\x80" * (width * 3)
    stream = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    entries = b"/Width %d /Height %d /ColorSpace /DeviceRGB /BitsPerComponent 8 /Filter /FlateDecode"
    return RawImage(entries % (width, height), stream)


def hand_pdf(pages: Sequence[Sequence[RawImage]], content: bytes | None = None) -> bytes:
    """A PDF of pages that each name their images in their resources and draw them.

    Objects are written in order with a correct cross-reference table; `content` replaces every
    page's content stream (already encoded, with its /Filter if any) when given.
    """
    objects: list[bytes] = [b"", b""]  # catalog and page tree, filled in at the end

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    kids = []
    for images in pages:
        names, draw = [], b""
        for number, image in enumerate(images):
            entries = image.entries
            if image.soft_mask is not None:
                entries += b" /SMask %d 0 R" % add(_image_object(image.soft_mask))
            ref = add(_image_object(RawImage(entries, image.stream)))
            names.append(b"/Im%d %d 0 R" % (number, ref))
            draw += b"q 100 0 0 100 0 0 cm /Im%d Do Q\n" % number
        if content is not None:
            stream = add(content)
        else:
            stream = add(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(draw), draw))
        kids.append(
            add(
                b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /XObject << %s >> >> "
                b"/Contents %d 0 R >>" % (b" ".join(names), stream)
            )
        )
    objects[0] = b"<< /Type /Catalog /Pages 2 0 R >>"
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
        b" ".join(b"%d 0 R" % kid for kid in kids),
        len(kids),
    )
    return _assemble(objects)


def _image_object(image: RawImage) -> bytes:
    return b"<< /Type /XObject /Subtype /Image %s /Length %d >>\nstream\n%s\nendstream" % (
        image.entries,
        len(image.stream),
        image.stream,
    )


def _assemble(objects: Sequence[bytes]) -> bytes:
    parts = [b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"]
    offsets = []
    size = len(parts[0])
    for number, body in enumerate(objects, start=1):
        offsets.append(size)
        part = b"%d 0 obj\n%s\nendobj\n" % (number, body)
        parts.append(part)
        size += len(part)
    table = b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    parts.append(b"xref\n0 %d\n0000000000 65535 f \n%s" % (len(objects) + 1, table))
    parts.append(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, size))
    return b"".join(parts)


def many_objects_pdf(count: int) -> bytes:
    """One empty page and `count` small objects, all in the cross-reference table: parsing cost."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>"]
    objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 10 10] >>")
    objects += [b"[1 2 3]"] * count
    return _assemble(objects)


def flate_content_bomb(inflated_bytes: int) -> bytes:
    """A page content stream (object body) that inflates to `inflated_bytes` of drawing operators."""
    compressor = zlib.compressobj(9)
    chunk = b"0 0 m\n" * 100_000
    parts = [compressor.compress(chunk) for _ in range(inflated_bytes // len(chunk))]
    stream = b"".join(parts) + compressor.flush()
    return b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream" % (len(stream), stream)


def encrypted_pdf(image: Image.Image, user_password: str, owner_password: str = "owner") -> bytes:
    """A PDF protected with pypdf (AES-256), the way a user's tools protect one."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pillow_pdf([image]))))
    writer.encrypt(user_password, owner_password, algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


_ZEROS_ENTRIES = b"/Width %d /Height %d /ColorSpace /DeviceRGB /BitsPerComponent 8 /Filter /FlateDecode /Name /I%d"  # noqa: E501
_EMPTY_FORM = b"<< /Type /XObject /Subtype /Form /BBox [0 0 1 1] /Resources %s /Length 0 >>\nstream\n\nendstream"  # noqa: E501


@functools.cache
def _zeros_stream(width: int, height: int) -> bytes:
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width * 3)
    return b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()


def zero_images(count: int = 64, side: int = 5000) -> bytes:
    """One page of `count` distinct side x side RGB Flate images of zeros, each under MAX_PIXELS: the
    issue's 4.7 MB document that took a server to 4.98 GB (distinct by their dictionaries' /Name)."""
    stream = _zeros_stream(side, side)
    return hand_pdf([[RawImage(_ZEROS_ENTRIES % (side, side, i), stream) for i in range(count)]])


def form_forest(pages: int, forms: int, depth: int = 1) -> bytes:
    """`pages` pages whose one shared resource dictionary names `forms` Form XObjects (nested `depth`
    deep, no image anywhere): every page walks them all, so reading costs pages x forms visits."""
    objects: list[bytes] = [b"", b""]

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    inner = b"<< >>"
    for _ in range(depth - 1):
        nested = add(_EMPTY_FORM % inner)
        inner = b"<< /XObject << /F %d 0 R >> >>" % nested
    refs = [add(_EMPTY_FORM % inner) for _ in range(forms)]
    names = b" ".join(b"/F%d %d 0 R" % (i, ref) for i, ref in enumerate(refs))
    resources = add(b"<< /XObject << %s >> >>" % names)
    kids = [
        add(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 10 10] /Resources %d 0 R >>" % resources)
        for _ in range(pages)
    ]
    objects[0] = b"<< /Type /Catalog /Pages 2 0 R >>"
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(b"%d 0 R" % k for k in kids), pages)
    return _assemble(objects)


def hostile_document(seed: int, max_bytes: int = 9 << 20) -> bytes:
    """A random mix, within the README's limits (a 10 MB body, 200 pages, 64 images, 64 megapixels), of
    what costs a reader most: image counts and sizes, filters (Flate of zeros or noise, JPEG, none, soft
    masks), Form nesting and counts, page counts and cross-reference sizes. The same seed, the same bytes."""
    import random

    rng = random.Random(seed)
    pages: list[list[RawImage]] = [[] for _ in range(rng.randint(1, 200))]
    budget = max_bytes
    for _ in range(rng.choice([0, 1, 8, 32, 64])):
        kind = rng.choice(["zeros", "noise", "jpeg", "raw", "masked", "gray"])
        side = rng.choice([64, 500, 2000, 5000, 6800])
        if kind == "zeros":
            image = RawImage(_ZEROS_ENTRIES % (side, side, rng.randrange(1 << 30)), _zeros_stream(side, side))
        elif kind == "noise":
            side = min(side, 1000)
            image = flate_image(Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3)))
        elif kind == "jpeg":
            image = jpeg_image(Image.new("RGB", (side, side), tuple(rng.randrange(256) for _ in range(3))))
        elif kind == "raw":
            side = min(side, 500)
            entries = b"/Width %d /Height %d /ColorSpace /DeviceGray /BitsPerComponent 8"
            image = RawImage(entries % (side, side), rng.randbytes(side * side))
        elif kind == "masked":
            mask = flate_image(Image.new("L", (side, side), rng.randrange(256)))
            image = flate_image(Image.new("RGB", (side, side), (9, 9, 9)), soft_mask=mask)
        else:
            image = flate_image(Image.new("L", (side, side), rng.randrange(256)))
        if len(image.stream) > budget // 2:
            continue
        budget -= len(image.stream)
        rng.choice(pages).append(image)
    document = hand_pdf(pages)
    extra = rng.choice(["none", "forms", "xref"])
    if extra == "forms":
        forest = form_forest(rng.randint(1, 200), rng.choice([100, 4000, 30000]), rng.randint(1, 12))
        return forest if len(forest) < max_bytes else document
    if extra == "xref":
        room = max(1, (max_bytes - len(document)) // 48)  # bytes an object and its entry take
        return many_objects_pdf(min(rng.choice([10_000, 100_000, 480_000]), room))
    return document


def object_stream_pdf(extra_objects: int = 0) -> bytes:
    """A one-page PDF 1.5 whose page lives in a compressed object stream, beside `extra_objects` small
    arrays packed in the same stream, found through a compressed cross-reference stream."""
    import struct

    packed = [b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 10 10] >>"] + [b"[1 2 3]"] * extra_objects
    numbers = range(3, 3 + len(packed))  # 1: catalog, 2: pages, then the packed objects
    offsets, size = [], 0
    for item in packed:
        offsets.append(size)
        size += len(item) + 1
    body = b"\n".join(packed) + b"\n"
    header = b" ".join(b"%d %d" % (number, at) for number, at in zip(numbers, offsets, strict=True)) + b"\n"
    stream_number, xref_number = 3 + len(packed), 4 + len(packed)
    compressed = zlib.compress(header + body)
    parts = [b"%PDF-1.5\n%\xe2\xe3\xcf\xd3\n"]
    at = {}
    for number, text in [
        (1, b"<< /Type /Catalog /Pages 2 0 R >>"),
        (2, b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>"),
        (
            stream_number,
            b"<< /Type /ObjStm /N %d /First %d /Filter /FlateDecode /Length %d >>\nstream\n%s\nendstream"
            % (len(packed), len(header), len(compressed), compressed),
        ),
    ]:
        at[number] = sum(len(part) for part in parts)
        parts.append(b"%d 0 obj\n%s\nendobj\n" % (number, text))
    at[xref_number] = sum(len(part) for part in parts)
    rows = [struct.pack(">BII", 0, 0, 65535)]
    for number in range(1, xref_number + 1):
        if number in at:
            rows.append(struct.pack(">BII", 1, at[number], 0))
        else:
            rows.append(struct.pack(">BII", 2, stream_number, number - 3))
    table = zlib.compress(b"".join(rows))
    parts.append(
        b"%d 0 obj\n<< /Type /XRef /Size %d /W [1 4 4] /Root 1 0 R /Filter /FlateDecode /Length %d >>\n"
        b"stream\n%s\nendstream\nendobj\n" % (xref_number, xref_number + 1, len(table), table)
    )
    parts.append(b"startxref\n%d\n%%%%EOF\n" % at[xref_number])
    return b"".join(parts)


# Issue 19's hostile documents, by what each costs a reader; each a list of the files one request sends.
ISSUE_DOCUMENTS: dict[str, Callable[[], list[bytes]]] = {
    "64 images of zeros, 5000x5000 each": lambda: [zero_images(64, 5000)],
    "16 PDFs of 200 pages sharing 4,000 forms": lambda: [form_forest(200, 4000)] * 16,
    "200 pages sharing 30,000 forms": lambda: [form_forest(200, 30000)],
    "400,000 objects in object and cross-reference streams": lambda: [object_stream_pdf(400_000)],
    "200,000 objects in a cross-reference table": lambda: [many_objects_pdf(200_000)],
    # The largest that still reads: pypdf parses every object of a stream it opens (+71 MiB measured).
    "60,000 objects in an object stream": lambda: [object_stream_pdf(60_000)],
}
