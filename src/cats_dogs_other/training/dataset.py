"""The labelled image folder: one sub-folder per class, files named `<pdf-id>_page<P>_index<I>.<ext>`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"})


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    label_index: int

    @property
    def group(self) -> str:
        """The source document: images of one PDF often show the same animal, so they split together."""
        stem = self.path.stem
        return stem.split("_page", 1)[0] if "_page" in stem else stem


def find_images(data_dir: Path, labels: list[str]) -> list[LabelledImage]:
    """Images under `data_dir/<label lower-case>/`, in a stable order."""
    items: list[LabelledImage] = []
    for index, label in enumerate(labels):
        folder = data_dir / label.lower()
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{data_dir} has no folder {label.lower()}/ (expected one per class: "
                f"{', '.join(lb.lower() for lb in labels)})"
            )
        items.extend(
            LabelledImage(path, index)
            for path in sorted(folder.iterdir())
            if path.suffix.lower() in IMAGE_SUFFIXES
        )
    if not items:
        raise FileNotFoundError(f"No images found under {data_dir}")
    return items


def dataset_sha256(items: list[LabelledImage], root: Path) -> str:
    """A hash of every (relative path, label, content): two trainings on the same data share it."""
    digest = hashlib.sha256()
    for item in sorted(items, key=lambda i: i.path.relative_to(root).as_posix()):
        digest.update(item.path.relative_to(root).as_posix().encode())
        digest.update(str(item.label_index).encode())
        digest.update(hashlib.sha256(item.path.read_bytes()).digest())
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
