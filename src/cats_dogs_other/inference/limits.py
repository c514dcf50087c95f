"""The numbers that bound decoding and documents, without the libraries that decode them: `Settings`
computes its defaults from these, so loading the settings imports neither Pillow nor pypdf."""

from __future__ import annotations

from dataclasses import dataclass

from cats_dogs_other.inference.budget import MemoryBudget, RequestBudget

MiB = 1 << 20
# Where no cgroup sets a limit (a laptop, a VM), the budgets are sized for the Deployment's pod
# (deploy/k8s: 768 Mi), so that a request is answered or refused alike in and out of it.
REFERENCE_MEMORY_LIMIT_BYTES = 768 * MiB
# What the rest of the process needs before any request's decode (docs/decisions.md, *Memory budget*):
# the model, ONNX Runtime's arena warmed at the largest batch and Python (140-190 MiB measured),
# connections and their headers (~40 MiB at MAX_CONNECTIONS), model inputs waiting (18 MiB).
PROCESS_RESERVE_BYTES = 256 * MiB
# OpenVINO's compiled model and thread pools hold more than ONNX Runtime's session: peak RSS under load
# was 290-303 MiB against 198 (BENCHMARKS.md, *Runtimes*).
OPENVINO_RESERVE_BYTES = 128 * MiB
BODY_COPIES = 3  # a request body is held up to 3 times while parsed (v2 base64 JSON: body, text, bytes)
ALLOCATOR_SLACK_BYTES = 64 * MiB  # fragmentation, thread stacks, libraries' own caches
MIN_DECODE_MEMORY_BYTES = 64 * MiB
DEFAULT_BODY_MEMORY_BYTES = 64 * MiB  # BODY_MEMORY_BYTES
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


def decode_memory_for(
    memory_limit_bytes: int, body_memory_bytes: int, workers: int = 1, runtime: str = "onnxruntime"
) -> int:
    """The decode budget that fits beside everything else in a worker's share of the memory limit (at
    least 64 MiB: a pod too small for a large image refuses it with a 413 naming the budget).

    768 MiB and the default 64 MiB of bodies: 768 - 256 - 3 x 64 - 64 = 256 MiB, enough for one 24 MP HEIC
    (10 bytes a pixel) or a 64-megapixel image at a time."""
    share = memory_limit_bytes // max(1, workers)
    process = PROCESS_RESERVE_BYTES + (OPENVINO_RESERVE_BYTES if runtime == "openvino" else 0)
    left = share - process - BODY_COPIES * body_memory_bytes - ALLOCATOR_SLACK_BYTES
    return max(MIN_DECODE_MEMORY_BYTES, left // MiB * MiB)


# Where no cgroup limit and no setting says otherwise: 256 MiB of decodes, images up to 64 megapixels.
DEFAULT_DECODE_MEMORY_BYTES = decode_memory_for(REFERENCE_MEMORY_LIMIT_BYTES, DEFAULT_BODY_MEMORY_BYTES)
DEFAULT_MAX_PIXELS = max_pixels_for(DEFAULT_DECODE_MEMORY_BYTES)


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
