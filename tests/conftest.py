"""Shared fixtures: the course's real dataset (read in place, never copied) and the default classifier."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cats_dogs_other.inference.classifier import ImageClassifier

REPO_ROOT = Path(__file__).resolve().parent.parent
DATASET_ROOT = Path(
    os.environ.get("CATS_DOGS_OTHER_DATASET", REPO_ROOT.parent / "shared" / "datasets" / "cats-dogs-other")
)
IMAGES_DIR = DATASET_ROOT / "images"
PDFS_DIR = DATASET_ROOT / "pdfs"
ANNOTATIONS_FILE = DATASET_ROOT / "annotations.json"


@pytest.fixture(scope="session")
def dataset_dir() -> Path:
    if not IMAGES_DIR.is_dir():
        reason = f"the course's dataset is absent: {IMAGES_DIR} (set CATS_DOGS_OTHER_DATASET to its folder)"
        pytest.skip(reason=reason)
    return IMAGES_DIR


@pytest.fixture(scope="session")
def labelled_files(dataset_dir: Path) -> list[tuple[str, Path]]:
    """(label as served, path) for every image of the dataset."""
    return [
        (folder.name.capitalize(), path)
        for folder in sorted(dataset_dir.iterdir())
        if folder.is_dir()
        for path in sorted(folder.glob("*.png"))
    ]


@pytest.fixture(scope="session")
def sample_files(dataset_dir: Path) -> dict[str, Path]:
    """One clear image of each class."""
    return {
        label: sorted((dataset_dir / label.lower()).glob("*.png"))[0] for label in ("Cat", "Dog", "Other")
    }


@pytest.fixture(scope="session")
def course_pdfs(dataset_dir: Path) -> list[Path]:
    """The course's 23 source documents, as it ships them."""
    return sorted(PDFS_DIR.glob("*.pdf"))


@pytest.fixture(scope="session")
def course_annotations(dataset_dir: Path) -> dict[str, str]:
    """The labelling tool's export: image file name (`{document}_page{p}_index{i}.png`) -> label."""
    export = json.loads(ANNOTATIONS_FILE.read_text())
    return {entry["fileName"]: entry["annotation"]["label"] for entry in export["annotations"]}


@pytest.fixture(scope="session")
def classifier() -> ImageClassifier:
    return ImageClassifier.load()
