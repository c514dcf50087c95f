"""Labelled images, from a folder (one sub-folder per class, files named `<pdf-id>_page<P>_index<I>.<ext>`)
or from the course's PDFs and its labelling tool's export, extracted in memory."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from cats_dogs_other.inference.documents import PdfRaster, read_document
from cats_dogs_other.inference.limits import DocumentLimits

COURSE_NAME = re.compile(r"^(?P<document>.+)_page(?P<page>\d+)_index(?P<index>\d+)\.\w+$")
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"})


@dataclass(frozen=True)
class LabelledImage:
    """An image and its label. `source` names it (a path under the data folder, or the course's file
    name for an image of a PDF); `data` is its encoded file, or a document's non-JPEG image."""

    source: str
    label_index: int
    data: bytes | PdfRaster

    @property
    def group(self) -> str:
        """The source document: images of one PDF often show the same animal, so they split together."""
        stem = Path(self.source).stem
        return stem.split("_page", 1)[0] if "_page" in stem else stem


def images_root(data_dir: Path, labels: list[str]) -> Path:
    """The folder holding the class folders: `data_dir`, or its `images/` (a dataset's root, as the
    course's dataset and `feedback export` lay it out, beside `annotations.json`)."""
    nested = data_dir / "images"
    if nested.is_dir() and not any((data_dir / label.lower()).is_dir() for label in labels):
        return nested
    return data_dir


def find_images(data_dir: Path, labels: list[str], every_label: bool = True) -> list[LabelledImage]:
    """Images under `data_dir/<label lower-case>/`, in a stable order. Without `every_label`, a class
    may have no folder (a feedback export holds only the labels people gave)."""
    items: list[LabelledImage] = []
    for index, label in enumerate(labels):
        folder = data_dir / label.lower()
        if not folder.is_dir() and not every_label:
            continue
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{data_dir} has no folder {label.lower()}/ (expected one per class: "
                f"{', '.join(lb.lower() for lb in labels)})"
            )
        items.extend(
            LabelledImage(path.relative_to(data_dir).as_posix(), index, path.read_bytes())
            for path in sorted(folder.iterdir())
            if path.suffix.lower() in IMAGE_SUFFIXES
        )
    if not items:
        raise FileNotFoundError(f"No images found under {data_dir}")
    return items


def find_document_images(
    pdfs_dir: Path, annotations: Path, labels: list[str], limits: DocumentLimits
) -> list[LabelledImage]:
    """The annotated images of the PDFs in `pdfs_dir`, labelled by the course's export
    (`annotations[].fileName` = `{document}_page{p}_index{i}.png`, `annotations[].annotation.label`).

    Images the export does not name (the repeated last page) are left out; an annotation whose
    image is not in the documents is an error, not a silently smaller dataset.
    """
    export = json.loads(annotations.read_text())
    by_label = {label.lower(): index for index, label in enumerate(labels)}
    wanted: dict[str, int] = {}
    for entry in export.get("annotations", []):
        name, label = entry.get("fileName"), (entry.get("annotation") or {}).get("label")
        if not isinstance(name, str) or not COURSE_NAME.match(name):
            raise ValueError(f"{annotations}: {name!r} is not named {{document}}_page{{p}}_index{{i}}.png")
        if not isinstance(label, str) or label.lower() not in by_label:
            raise ValueError(f"{annotations}: {name} has label {label!r}, not one of {', '.join(labels)}")
        wanted[name] = by_label[label.lower()]
    items: list[LabelledImage] = []
    for path in sorted(pdfs_dir.glob("*.pdf")):
        for image in read_document(path.read_bytes(), limits).to_classify:
            name = f"{path.stem}_page{image.position.page}_index{image.position.index}.png"
            if name in wanted and image.data is not None:
                items.append(LabelledImage(name, wanted.pop(name), image.data))
    if wanted:
        missing = ", ".join(sorted(wanted)[:5])
        count = len(wanted)
        raise FileNotFoundError(f"{count} annotated images are not in the PDFs of {pdfs_dir}: {missing}")
    if not items:
        raise FileNotFoundError(f"No annotated images found in the PDFs of {pdfs_dir}")
    return items


def dataset_sha256(items: list[LabelledImage]) -> str:
    """A hash of every (source, label, content): two trainings on the same data share it."""
    digest = hashlib.sha256()
    for item in sorted(items, key=lambda i: i.source):
        digest.update(item.source.encode())
        digest.update(str(item.label_index).encode())
        content = item.data if isinstance(item.data, bytes) else item.data.encoded
        digest.update(hashlib.sha256(content).digest())
    return digest.hexdigest()


def group_folds(items: list[LabelledImage], folds: int) -> list[list[int]]:
    """Split item indices into folds by source group (never splitting a group), balancing fold sizes."""
    sizes: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        sizes.setdefault(item.group, []).append(index)
    buckets: list[list[int]] = [[] for _ in range(min(folds, len(sizes)))]
    # Largest groups first into the currently smallest fold; ties broken by name for determinism.
    for _, members in sorted(sizes.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        min(buckets, key=len).extend(members)
    return buckets
