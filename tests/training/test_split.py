"""The evaluation split: documents, not images, held out; the same on every run and machine; stable
as data grows; and what it holds out never reaches the model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cats_dogs_other.models.card import ModelCard
from cats_dogs_other.training.dataset import LabelledImage, find_images
from cats_dogs_other.training.split import SPLIT_SALT, EvaluationSplit
from cats_dogs_other.training.train import TrainConfig, train

LABELS = ["Cat", "Dog", "Other"]


def named(*names: str) -> list[LabelledImage]:
    return [LabelledImage(f"cat/{name}", 0, b"") for name in names]


def test_a_document_is_held_out_whole_and_the_same_way_every_time(dataset_dir: Path) -> None:
    items = find_images(dataset_dir, LABELS)
    split = EvaluationSplit()
    held_out = split.evaluation_part(items)
    trained = split.training_part(items)
    assert len(held_out) + len(trained) == len(items)
    held_groups, trained_groups = {i.group for i in held_out}, {i.group for i in trained}
    assert held_groups
    assert trained_groups
    assert not held_groups & trained_groups
    # Nothing random, nothing stored: a new split object on the same names agrees.
    again = EvaluationSplit(split.share).evaluation_part(items)
    assert [i.source for i in again] == [i.source for i in held_out]
    # About `share` of the documents (23 here): the hash spreads names evenly, not exactly.
    assert 2 <= len(held_groups) <= 9


def test_a_growing_dataset_never_moves_a_document_across() -> None:
    split = EvaluationSplit()
    before = [f"doc-{n}_page1_index0.png" for n in range(200)]
    grown = before + [f"new-{n}_page1_index0.png" for n in range(200)]
    was = {i.group for i in split.evaluation_part(named(*before))}
    now = {i.group for i in split.evaluation_part(named(*grown))}
    assert was == {g for g in now if g.startswith("doc-")}
    assert 0.15 < len(now) / 400 < 0.35  # about the share
    # A larger share holds out a superset: a model trained with it was kept out of the smaller one's.
    assert was <= {i.group for i in EvaluationSplit(0.5).evaluation_part(named(*before))}


def test_kept_out_of_reads_the_card() -> None:
    split = EvaluationSplit(0.25)
    card = ModelCard(training={"evaluation_split": {"share": 0.25, "salt": SPLIT_SALT}})
    assert split.kept_out_of(card)
    assert split.kept_out_of(ModelCard(training={"evaluation_split": {"share": 0.5, "salt": SPLIT_SALT}}))
    assert not split.kept_out_of(ModelCard(training={"evaluation_split": {"share": 0.1, "salt": SPLIT_SALT}}))
    assert not split.kept_out_of(ModelCard(training={"evaluation_split": {"share": 0.25, "salt": "other"}}))
    assert not split.kept_out_of(ModelCard())  # a card from before the split, or from elsewhere
    with pytest.raises(ValueError, match="held-out share"):
        EvaluationSplit(1.0)


def test_the_held_out_documents_never_reach_the_model(dataset_dir: Path, tmp_path: Path) -> None:
    """Trained on the data with and without its held-out documents, the model file is the same byte
    for byte: those images changed nothing in it (training is deterministic)."""
    split = EvaluationSplit()
    every = find_images(dataset_dir, LABELS)
    chosen = [*split.evaluation_part(every)[::3], *split.training_part(every)[::4]]
    with_held_out, without = tmp_path / "with", tmp_path / "without"
    for item in chosen:
        for root in (with_held_out, without):
            if root is without and split.holds_out(item.group):
                continue
            (root / Path(item.source).parent).mkdir(parents=True, exist_ok=True)
            shutil.copy(dataset_dir / item.source, root / item.source)
    models = {
        name: train(TrainConfig(data_dirs=(root,), out_dir=tmp_path / f"model-{name}", folds=3))
        for name, root in (("with", with_held_out), ("without", without))
    }
    held = models["with"].card.training["evaluation_split"]
    assert held["images"] == len(split.evaluation_part(chosen)) > 0
    assert models["without"].card.training["evaluation_split"]["images"] == 0
    assert models["with"].model_path.read_bytes() == models["without"].model_path.read_bytes()
    assert models["with"].card.metrics["validation"] == models["without"].card.metrics["validation"]
    assert models["with"].card.metrics["held_out"]["images"] == held["images"]
