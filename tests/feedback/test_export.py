"""`feedback export`: the stored corrections as a dataset in the course's format."""

from __future__ import annotations

import hashlib
import io
import json
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image

from cats_dogs_other.feedback import FeedbackRecord, FeedbackStore, export_dataset
from cats_dogs_other.feedback.export import dotnet_ticks, majority
from cats_dogs_other.models.card import DEFAULT_LABELS
from cats_dogs_other.training.dataset import find_images, images_root
from tests.conftest import ANNOTATIONS_FILE


def png(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 6), colour).save(out, "PNG")
    return out.getvalue()


def add(store: FeedbackStore, name: str, label: str, subject: str) -> str:
    sha256 = hashlib.sha256(name.encode()).hexdigest()
    store.add(FeedbackRecord(sha256, png((len(name), 0, 0)), 8, 6, label, subject))
    return sha256


def test_majority_label_and_ties() -> None:
    assert majority(["Cat", "Dog", "Cat"]) == "Cat"
    assert majority(["Dog"]) == "Dog"
    assert majority(["Cat", "Dog"]) is None
    assert majority(["Cat", "Dog", "Other", "Other", "Cat"]) is None


def test_export_writes_the_course_format_with_majority_labels(tmp_path: Path) -> None:
    store = FeedbackStore(f"sqlite:///{tmp_path / 'feedback.db'}")
    agreed = add(store, "a cat", "Cat", "alice")
    add(store, "a cat", "Cat", "bob")
    outvoted = add(store, "mostly a dog", "Dog", "alice")
    add(store, "mostly a dog", "Dog", "bob")
    add(store, "mostly a dog", "Other", "carol")
    tie = add(store, "who knows", "Cat", "alice")
    add(store, "who knows", "Dog", "bob")
    out = tmp_path / "export"

    report = export_dataset(store, out)

    assert report.per_label == {"cat": 1, "dog": 1}
    assert report.ties == {tie: {"Cat": 1, "Dog": 1}}
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        f"images/cat/{agreed}.png",
        f"images/dog/{outvoted}.png",
    ]
    assert Image.open(out / "images" / "cat" / f"{agreed}.png").size == (8, 6)
    exported = json.loads((out / "annotations.json").read_text())
    labels = {entry["fileName"]: entry["annotation"]["label"] for entry in exported["annotations"]}
    assert labels == {f"{agreed}.png": "cat", f"{outvoted}.png": "dog"}
    assert exported["numberAnnotationsDone"] == 2
    assert exported["tiesLeftOut"] == [{"sha256": tie, "votes": {"Cat": 1, "Dog": 1}}]
    # The same keys as the course's own export, and the training reads the folder as it is.
    if ANNOTATIONS_FILE.is_file():
        course = json.loads(ANNOTATIONS_FILE.read_text())
        assert set(course) <= set(exported)
        assert set(course["annotations"][0]) <= set(exported["annotations"][0])
    found = find_images(images_root(out, list(DEFAULT_LABELS)), list(DEFAULT_LABELS), every_label=False)
    assert sorted((item.source, item.label_index) for item in found) == [
        (f"cat/{agreed}.png", 0),
        (f"dog/{outvoted}.png", 1),
    ]
    store.close()


def test_dates_are_dotnet_ticks_as_the_course_tool_writes_them() -> None:
    # The first date in the course's export, 638413464511054424, is 2024-01-20 11:20:51.1054424 UTC.
    assert dotnet_ticks(datetime(2024, 1, 20, 11, 20, 51, 105442, tzinfo=UTC)) == 638413464511054420


def test_the_export_counts_voters_and_leaves_out_images_with_too_few(tmp_path: Path) -> None:
    """100 anonymous answers are one voter; three signed-in people are three."""
    store = FeedbackStore(f"sqlite:///{tmp_path / 'feedback.db'}")
    crowd = add(store, "a crowd's cat", "Cat", "alice")
    add(store, "a crowd's cat", "Cat", "bob")
    add(store, "a crowd's cat", "Cat", "carol")
    stuffed = hashlib.sha256(b"stuffed").hexdigest()
    for _ in range(100):
        store.add(FeedbackRecord(stuffed, png((1, 2, 3)), 8, 6, "Dog", None, sender="one client"))

    report = export_dataset(store, tmp_path / "export", min_voters=2)

    exported = json.loads((tmp_path / "export" / "annotations.json").read_text())
    voters = [(entry["fileName"], entry["voters"]) for entry in exported["annotations"]]
    assert voters == [(f"{crowd}.png", 3)]
    assert report.too_few_voters == 1
    assert (exported["minVoters"], exported["tooFewVotersLeftOut"]) == (2, 1)
    everything = export_dataset(store, tmp_path / "all")
    assert everything.per_label == {"cat": 1, "dog": 1}
    store.close()
