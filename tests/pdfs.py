"""PDFs the tests write themselves: with Pillow (what a user's tools produce) and by hand (what an
attacker writes: bombs, lies in dictionaries, broken structure)."""

from __future__ import annotations

import functools
import io
import zlib
from collections.abc import Sequence
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
