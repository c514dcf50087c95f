"""What the feedback store costs: bytes per stored image, the time to purge 10,000 labels, and the write
rate it sustains, on SQLite and on a real PostgreSQL server.

    .venv/bin/python benchmarks/feedback_store.py [--seconds 5]

Images are stored as `POST /feedback` stores them (`ImageClassifier.training_image`: the model's reduced,
upright decode, re-encoded as PNG of at most 512 pixels a side): the course's 139 photos, and 8 of them
as 12-megapixel phone photos (4032x3024, sensor-like noise, JPEG quality 92, ~4 MB). PostgreSQL is
Debian's (`make test` installs it), started as in the tests (`tests/postgres.py`). Prints Markdown for
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from tests.images import phone_photo  # noqa: E402
from tests.postgres import PostgresServer, postgres_bin_dir  # noqa: E402

from cats_dogs_other.feedback import FeedbackPolicy, FeedbackRecord, FeedbackStore  # noqa: E402
from cats_dogs_other.inference.classifier import ImageClassifier  # noqa: E402
from machine import describe  # noqa: E402

DEFAULT_IMAGES = HERE.parent.parent / "shared" / "datasets" / "cats-dogs-other" / "images"
PURGED_LABELS = 10_000
LABELS_PER_IMAGE = 5


def course_photos(folder: Path) -> list[bytes]:
    return [
        path.read_bytes() for path in sorted(folder.rglob("*")) if path.suffix.lower() in {".png", ".jpg"}
    ]


def phone_jpegs(photos: list[bytes], count: int) -> list[bytes]:
    out = []
    for data in photos[:count]:
        buffer = io.BytesIO()
        phone_photo(Image.open(io.BytesIO(data)), (4032, 3024)).save(buffer, "JPEG", quality=92)
        out.append(buffer.getvalue())
    return out


def record(png: bytes, n: int, subject: str) -> FeedbackRecord:
    """A label on image number `n` (its own sha256), with the given PNG's bytes."""
    sha256 = hashlib.sha256(f"{n}".encode()).hexdigest()
    sender = hashlib.sha256(subject.encode()).hexdigest()
    return FeedbackRecord(sha256, png, 512, 384, "Cat", subject, sender=sender)


def bytes_per_image(url: str, pngs: list[bytes]) -> float:
    store = FeedbackStore(url)
    store.migrate()
    empty = store.size_bytes()
    for n, png in enumerate(pngs):
        store.add(record(png, n, "alice"))
    grown = store.size_bytes() - empty
    store.close()
    return grown / len(pngs)


def peak_rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024


def reset_peak_rss() -> float:
    """Make VmHWM start again from the current RSS (Linux: clear_refs 5); the RSS now, in MiB."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
        refs.write("5")
    return peak_rss_mib()


def purge_time(url: str, png: bytes) -> tuple[float, float]:
    """Seconds to purge 10,000 expired labels on 2,000 images, and the process's peak RSS growth (MiB)."""
    store = FeedbackStore(url, FeedbackPolicy(retention=timedelta(days=30)))
    old = datetime.now(UTC) - timedelta(days=31)
    for n in range(PURGED_LABELS):
        store.add(record(png, n // LABELS_PER_IMAGE, f"person {n % LABELS_PER_IMAGE}"), now=old)
    assert store.counts() == (PURGED_LABELS // LABELS_PER_IMAGE, PURGED_LABELS)
    before = reset_peak_rss()
    started = time.perf_counter()
    removed = store.purge()
    seconds = time.perf_counter() - started
    growth = peak_rss_mib() - before
    assert store.counts() == (0, 0), removed
    store.close()
    return seconds, growth


def write_rate(url: str, png: bytes, threads: int, seconds: float) -> float:
    store = FeedbackStore(url)
    store.migrate()
    done = [0] * threads
    stop = time.monotonic() + seconds

    def write(worker: int) -> None:
        n = 0
        while time.monotonic() < stop:
            store.add(record(png, 10_000_000 * (worker + 1) + n, f"writer {worker}"))
            n += 1
        done[worker] = n

    workers = [threading.Thread(target=write, args=(w,)) for w in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    store.close()
    return sum(done) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()

    classifier = ImageClassifier.load(None)
    photos = course_photos(args.images)
    course_pngs = [classifier.training_image(data)[0] for data in photos]
    phone_pngs = [classifier.training_image(data)[0] for data in phone_jpegs(photos, 8)]
    typical = sorted(course_pngs, key=len)[len(course_pngs) // 2]  # the median course photo's PNG

    bin_dir = postgres_bin_dir()
    postgres = PostgresServer(bin_dir) if bin_dir is not None else None
    if postgres is not None:
        postgres.start()
    try:
        print(f"Machine: {describe()}\n")
        print(f"Command: `.venv/bin/python benchmarks/feedback_store.py --seconds {args.seconds:g}`\n")
        print("| images | stored PNG KB, median (min-max) |")
        print("|---|---|")
        for name, pngs in (("course photos", course_pngs), ("phone photos (12 MP JPEG)", phone_pngs)):
            sizes = [len(png) / 1000 for png in pngs]
            spread = f"{statistics.median(sizes):.0f} ({min(sizes):.0f}-{max(sizes):.0f})"
            print(f"| {len(sizes)} {name} | {spread} |")
        print()
        print(
            "| database | store growth per course photo KB | per phone photo KB | purge of 10,000 labels "
            "on 2,000 images, s | its peak RSS growth, MiB | writes/s, 1 thread | writes/s, 4 threads |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        print(measure("SQLite", lambda: sqlite_url(), course_pngs, phone_pngs, typical, args.seconds))
        if postgres is None:
            print("| PostgreSQL | (not installed) | | | | | |")
        else:
            print(
                measure(
                    "PostgreSQL", postgres.create_database, course_pngs, phone_pngs, typical, args.seconds
                )
            )
    finally:
        if postgres is not None:
            postgres.stop()


def sqlite_url() -> str:
    return f"sqlite:///{Path(tempfile.mkdtemp(prefix='cdo-feedback-bench-')) / 'feedback.db'}"


def measure(
    name: str,
    fresh: Callable[[], str],
    course: list[bytes],
    phone: list[bytes],
    typical: bytes,
    seconds: float,
) -> str:
    """One table row; each measure on a fresh database."""
    per_course = bytes_per_image(fresh(), course) / 1000
    per_phone = bytes_per_image(fresh(), phone) / 1000
    purge_seconds, purge_growth = purge_time(fresh(), typical)
    one = write_rate(fresh(), typical, 1, seconds)
    four = write_rate(fresh(), typical, 4, seconds)
    cells = [f"{per_course:.0f}", f"{per_phone:.0f}", f"{purge_seconds:.2f}", f"{purge_growth:.1f}"]
    return f"| {name} | {' | '.join(cells)} | {one:.0f} | {four:.0f} |"


if __name__ == "__main__":
    main()
