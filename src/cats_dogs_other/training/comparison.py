"""Models judged side by side on the same labelled images: the work `evaluate` and `promote` share.

Each model (by role: candidate, champion) is loaded as `serve` would load it, every image is sent
through the service's own decoding once per variant, and both reports are written. Needs no training
stack: it runs wherever the service does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cats_dogs_other.inference.classifier import ImageClassifier
from cats_dogs_other.models.source import ModelSource, resolve_model
from cats_dogs_other.settings import LimitSettings, ModelSettings
from cats_dogs_other.training.dataset import LabelledImage, find_document_images, find_images, images_root
from cats_dogs_other.training.evaluation import VARIANTS, Evaluated, evaluate, report, write_report
from cats_dogs_other.training.split import EvaluationSplit


class ComparisonError(ValueError):
    """What was given cannot be judged (unknown variants, models with other labels, no held-out image):
    the command line says so and exits 2."""


@dataclass(frozen=True)
class LabelledData:
    """Where the labelled images are: folders (the course's, feedback exports), or PDFs and the
    labelling tool's export, as `train` takes them."""

    folders: tuple[Path, ...] = ()
    pdfs: Path | None = None
    annotations: Path | None = None

    def images(self, labels: list[str]) -> tuple[list[LabelledImage], list[str]]:
        """Every labelled image, and how the report names where they came from."""
        if self.pdfs is not None and self.annotations is not None:
            limits = LimitSettings().document_limits()
            return find_document_images(self.pdfs, self.annotations, labels, limits), [str(self.pdfs)]
        found = [
            i for folder in self.folders for i in find_images(images_root(folder, labels), labels, False)
        ]
        return found, [str(folder) for folder in self.folders]


@dataclass(frozen=True)
class Comparison:
    """The report (as written to `files`: JSON, Markdown) and where each role's model came from."""

    report: dict[str, Any]
    files: tuple[Path, Path]
    sources: dict[str, ModelSource]

    def accuracy(self, role: str) -> dict[str, float]:
        return {name: v["accuracy"] for name, v in self.report["models"][role]["variants"].items()}


def compare(
    models: dict[str, str | None],
    data: LabelledData,
    *,
    split: EvaluationSplit | None,
    variants: Sequence[str],
    unsure_below: float,
    out: Path,
    settings: ModelSettings,
) -> Comparison:
    """Load each model (role -> URI, None for the built-in one), evaluate all of them on the held-out
    part of `data` (all of it without a `split`), and write the reports into `out`."""
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ComparisonError(f"no variant {', '.join(unknown)} (there are {', '.join(VARIANTS)})")
    registry = settings.mlflow_registry()
    sources = {role: resolve_model(uri, registry=registry) for role, uri in models.items()}
    classifiers = {
        role: ImageClassifier.from_source(source, runtime=settings.inference_runtime)
        for role, source in sources.items()
    }
    labels = next(iter(classifiers.values())).labels
    if any(c.labels != labels for c in classifiers.values()):
        raise ComparisonError("the two models answer with different labels; they cannot be compared")
    items, names = data.images(labels)
    if split is not None:
        items = split.evaluation_part(items)
        if not items:
            raise ComparisonError(
                f"none of the documents of {', '.join(names)} is in the held-out evaluation set "
                f"(--hold-out {split.share:g}); give more data, or --all-images to evaluate on every image"
            )
    results = {
        role: Evaluated(
            f"{models[role] or 'the built-in model'} (sha256 {c.sha256})",
            None if split is None else split.kept_out_of(c.card),
            evaluate(c, items, unsure_below=unsure_below, variants=variants),
        )
        for role, c in classifiers.items()
    }
    held_out = (
        None
        if split is None
        else {"share": split.share, "salt": split.salt, "groups": len({i.group for i in items})}
    )
    report_json = report(results, images=len(items), data=names, unsure_below=unsure_below, split=held_out)
    return Comparison(report_json, write_report(report_json, out), sources)
