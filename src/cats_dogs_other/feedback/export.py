"""Feedback to a dataset in the course's format, ready for `cats-dogs-other train --data DIR`.

`DIR/images/<label>/<sha256>.png` (labels in lower case, as the course's folders) and
`DIR/annotations.json`, the course's labelling export: `annotations[].fileName` and
`annotations[].annotation.label`. Each image gets its majority label; a tie is left out and listed.
An image labelled by fewer distinct voters than `min_voters` is left out too (each person counts once,
and all anonymous answers on an image count as one voter, the latest: the store keeps them so), and each
annotation records its number of voters.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cats_dogs_other.feedback.store import FeedbackStore

# The course's labelling tool dates annotations in .NET ticks: 100 ns since 0001-01-01 UTC.
_TICKS_EPOCH = datetime(1, 1, 1, tzinfo=UTC)


def dotnet_ticks(moment: datetime) -> int:
    delta = moment - _TICKS_EPOCH
    return (delta.days * 86_400 + delta.seconds) * 10_000_000 + delta.microseconds * 10


@dataclass
class ExportReport:
    per_label: dict[str, int] = field(default_factory=dict)
    ties: dict[str, dict[str, int]] = field(default_factory=dict)  # sha256 -> votes, left out
    too_few_voters: int = 0  # images left out for having fewer voters than min_voters

    @property
    def images(self) -> int:
        return sum(self.per_label.values())


def majority(votes: list[str]) -> str | None:
    """The label most people gave, or None when the top is shared."""
    ranked = Counter(votes).most_common()
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return None
    return ranked[0][0]


def export_dataset(store: FeedbackStore, out_dir: Path, min_voters: int = 1) -> ExportReport:
    """Write every labelled image and `annotations.json` under `out_dir` (created; files replaced)."""
    report = ExportReport()
    annotations: list[dict[str, object]] = []
    for entry in store.labelled_images():
        if len(entry.labels) < min_voters:
            report.too_few_voters += 1
            continue
        label = majority(entry.labels)
        if label is None:
            report.ties[entry.sha256] = dict(Counter(entry.labels))
            continue
        png = store.image_png(entry.sha256)
        if png is None:  # deleted since the labels were read
            continue
        folder = out_dir / "images" / label.lower()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{entry.sha256}.png").write_bytes(png)
        report.per_label[label.lower()] = report.per_label.get(label.lower(), 0) + 1
        annotations.append(
            {
                "nameIdentifier": "feedback",
                "createDate": dotnet_ticks(entry.first_at),
                "fileName": f"{entry.sha256}.png",
                "annotation": {"label": label.lower()},
                "votes": len(entry.labels),
                "voters": len(entry.labels),  # one label per voter: the same number, named for what it is
            }
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    document = {
        "projectName": "cats_dogs_others",
        "projectType": "ImageClassifier",
        "datasetName": "cats_dogs_others_feedback",
        "datasetType": "Image",
        "classification": "Internal",
        "numberAnnotationsDone": len(annotations),
        "numberAnnotationsToDo": len(annotations),
        "annotations": annotations,
        "tiesLeftOut": [{"sha256": sha, "votes": votes} for sha, votes in report.ties.items()],
        "minVoters": min_voters,
        "tooFewVotersLeftOut": report.too_few_voters,
    }
    (out_dir / "annotations.json").write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    return report
