"""Which source documents never reach training: the evaluation set a promotion is decided on.

A document is held out when a hash of its name (salted, so the split is this project's own) falls
below `share`. Nothing is stored and nothing is random: `train` and `evaluate` compute the same split
from the same names, a document never changes sides, and a dataset that grows (new PDFs, a new
feedback export) adds each new document to one side by its own hash without moving the others.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cats_dogs_other.models.card import ModelCard
from cats_dogs_other.training.dataset import LabelledImage

SPLIT_SALT = "cats-dogs-other/evaluation/v1"
DEFAULT_HOLD_OUT = 0.25


@dataclass(frozen=True)
class EvaluationSplit:
    """`share` of the source documents (PDFs; each feedback image is its own) kept out of training."""

    share: float = DEFAULT_HOLD_OUT
    salt: str = SPLIT_SALT

    def __post_init__(self) -> None:
        if not 0.0 <= self.share < 1.0:
            raise ValueError(f"the held-out share must be in [0, 1), not {self.share}")

    def holds_out(self, group: str) -> bool:
        digest = hashlib.sha256(f"{self.salt}\0{group}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.share

    def evaluation_part(self, items: Sequence[LabelledImage]) -> list[LabelledImage]:
        return [item for item in items if self.holds_out(item.group)]

    def training_part(self, items: Sequence[LabelledImage]) -> list[LabelledImage]:
        return [item for item in items if not self.holds_out(item.group)]

    def as_card(self, held_out: Sequence[LabelledImage]) -> dict[str, Any]:
        """What the model card records: the rule, and the documents it kept out of this training."""
        return {
            "share": self.share,
            "salt": self.salt,
            "images": len(held_out),
            "groups": sorted({item.group for item in held_out}),
        }

    def kept_out_of(self, card: ModelCard) -> bool:
        """Whether a model with this card was trained without this split's evaluation part: its card
        records a split with the same salt and at least this share (a larger share holds out a superset)."""
        recorded = card.training.get("evaluation_split")
        if not isinstance(recorded, dict) or recorded.get("salt") != self.salt:
            return False
        share = recorded.get("share")
        return isinstance(share, int | float) and share >= self.share
