"""The numbers that bound decoding and documents, without the libraries that decode them: `Settings`
computes its defaults from these, so loading the settings imports neither Pillow nor pypdf."""

from __future__ import annotations

from dataclasses import dataclass

from cats_dogs_other.inference.budget import MemoryBudget, RequestBudget

DEFAULT_DECODE_MEMORY_BYTES = 192 << 20  # docs/decisions.md: how the pod's 768 MiB are shared
# Pillow keeps at most 4 bytes per pixel (RGB is stored as RGBX).
RASTER_BYTES_PER_PIXEL = 4
# Rows are converted this many pixels at a time: a few MB of temporaries, whatever the image size.
STRIP_PIXELS = 1 << 18
STRIP_BYTES_PER_PIXEL = 24  # crop, alpha composite, conversion and 16-bit scaling temporaries
DECODER_WORKSPACE_BYTES = 4 << 20  # zlib, libjpeg and libtiff state, Python objects
# Bytes all the documents of one request may inflate to (object streams and images' samples together).
REQUEST_INFLATION_BYTES = 512 << 20


def max_pixels_for(decode_memory_bytes: int) -> int:
    """The largest pixel count (in whole millions) whose worst-case decode fits the budget alone."""
    usable = decode_memory_bytes - STRIP_PIXELS * STRIP_BYTES_PER_PIXEL - DECODER_WORKSPACE_BYTES
    return max(1_000_000, usable // RASTER_BYTES_PER_PIXEL // 1_000_000 * 1_000_000)


DEFAULT_MAX_PIXELS = max_pixels_for(DEFAULT_DECODE_MEMORY_BYTES)  # 47 million


@dataclass(frozen=True)
class DocumentLimits:
    """What documents may cost; the values come from `Settings` (MAX_PDF_PAGES, ...). `seconds` is the
    work one request's documents may take in all (PDF_TIME_BUDGET_SECONDS)."""

    max_pages: int
    max_images: int
    max_pixels: int
    seconds: float

    def request_budget(self, capacity: int = 1 << 62) -> RequestBudget:
        """A budget for work outside the service (the CLI, training): time and inflation, no sharing."""
        return RequestBudget(MemoryBudget(capacity), self.seconds, REQUEST_INFLATION_BYTES)
