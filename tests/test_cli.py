"""The console script, run as users run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cats_dogs_other.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_predict_json_contract(sample_files: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    missing = tmp_path / "missing.png"
    files = [str(sample_files["Cat"]), str(bad), str(sample_files["Dog"]), str(missing)]
    done = run_cli("predict", "--json", *files)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["file"] for line in lines] == files
    assert lines[0]["prediction"] == "Cat"
    assert lines[2]["prediction"] == "Dog"
    assert set(lines[0]) == {"file", "prediction", "values"}
    assert abs(sum(lines[0]["values"]) - 1) < 1e-5
    assert set(lines[1]) == {"file", "error"}
    assert "Not a supported image" in lines[1]["error"]
    assert "No such file" in lines[3]["error"]
    assert done.returncode != 0


def test_predict_succeeds_when_every_file_does(sample_files: dict[str, Path]) -> None:
    done = run_cli("predict", str(sample_files["Other"]))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{sample_files['Other']}: Other (Cat ")


def test_predict_with_a_missing_model_says_so(sample_files: dict[str, Path], tmp_path: Path) -> None:
    done = run_cli("predict", "--model", str(tmp_path / "nope.onnx"), str(sample_files["Cat"]))
    assert done.returncode == 2
    assert "Model file not found" in done.stderr


def test_train_on_a_small_dataset(dataset_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    for folder in ("cat", "dog", "other"):
        (data / folder).mkdir(parents=True)
        for path in sorted((dataset_dir / folder).glob("*.png"))[:4]:
            (data / folder / path.name).write_bytes(path.read_bytes())
    done = run_cli("train", "--data", str(data), "--out", str(tmp_path / "out"), "--folds", "2")
    assert done.returncode == 0, done.stderr
    assert "validation accuracy" in done.stdout
    assert (tmp_path / "out" / "model.onnx").is_file()
    card = json.loads((tmp_path / "out" / "model.json").read_text())
    assert card["training"]["command"].startswith("cats-dogs-other train --data")


def test_every_setting_is_a_serve_flag_that_settings_validates() -> None:
    from cats_dogs_other.cli import _given_settings, build_parser
    from cats_dogs_other.settings import Settings

    parser = build_parser()
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        args = parser.parse_args(["serve", flag] if field.annotation is bool else ["serve", flag, "1"])
        assert name in _given_settings(args), flag
    given = _given_settings(
        parser.parse_args(["serve", "--no-auth", "--model", "m.onnx", "--max-header-bytes", "2048"])
    )
    assert given == {"auth_disabled": True, "model_uri": "m.onnx", "max_header_bytes": "2048"}
    settings = Settings(**given)
    assert (settings.auth_disabled, settings.model_uri, settings.max_header_bytes) == (True, "m.onnx", 2048)
    assert _given_settings(parser.parse_args(["serve"])) == {}  # flags not given leave env and defaults


def test_an_invalid_flag_value_is_refused_with_the_settings_message() -> None:
    done = run_cli("serve", "--no-auth", "--batch-max-size", "0")
    assert done.returncode == 2
    assert "invalid configuration" in done.stderr
    assert "batch_max_size" in done.stderr


def test_predict_answers_each_image_of_a_pdf(course_pdfs: list[Path], sample_files: dict[str, Path]) -> None:
    document = course_pdfs[1]  # 3 pages: a dog, something else, the dog again
    done = run_cli("predict", "--json", str(document), str(sample_files["Cat"]))
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(line.get("page"), line.get("index")) for line in lines] == [(0, 0), (1, 0), (2, 0), (None, None)]
    assert [line["prediction"] for line in lines] == ["Dog", "Other", "Dog", "Cat"]
    assert lines[2]["duplicate_of"] == {"page": 0, "index": 0}
    assert lines[2]["values"] == lines[0]["values"]
    assert set(lines[0]) == {"file", "page", "index", "prediction", "values"}
    plain = run_cli("predict", str(document))
    assert f"{document} page 2 image 0: Dog (" in plain.stdout
    assert "(same image as page 0 image 0)" in plain.stdout


def test_extract_writes_the_course_file_names(
    course_pdfs: list[Path], course_annotations: dict[str, str], dataset_dir: Path, tmp_path: Path
) -> None:
    from PIL import Image

    done = run_cli("extract", *map(str, course_pdfs[:3]), "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    written = sorted(path.name for path in tmp_path.glob("*.png"))
    expected = sorted(
        name for name in course_annotations if name.split("_page")[0] in {p.stem for p in course_pdfs[:3]}
    )
    assert written == expected  # the unique images, named as the course names them; no repeats
    for name in written:
        ours = Image.open(tmp_path / name)
        theirs = Image.open(next(dataset_dir.glob(f"*/{name}")))
        assert (ours.size, ours.mode) == (theirs.size, "RGB")


def test_extract_reports_an_unreadable_document(tmp_path: Path) -> None:
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.7\n" + b"\x00" * 64)
    done = run_cli("extract", str(broken), "--out", str(tmp_path / "out"))
    assert done.returncode == 1
    assert "malformed or truncated" in done.stderr


def test_train_needs_images_or_pdfs_with_annotations(tmp_path: Path) -> None:
    done = run_cli("train", "--pdfs", str(tmp_path), "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert "--pdfs DIR with --annotations FILE" in done.stderr


def test_feedback_export_lists_ties_and_delete_withdraws_an_image(tmp_path: Path) -> None:
    from cats_dogs_other.feedback import FeedbackRecord, FeedbackStore

    database = f"sqlite:///{tmp_path / 'feedback.db'}"
    store = FeedbackStore(database)
    kept, disputed = "a" * 64, "b" * 64
    store.add(FeedbackRecord(kept, b"png", 1, 1, "Cat", "alice"))
    store.add(FeedbackRecord(disputed, b"png", 1, 1, "Cat", "alice"))
    store.add(FeedbackRecord(disputed, b"png", 1, 1, "Dog", "bob"))
    store.close()

    exported = run_cli("feedback", "export", "--database", database, "--out", str(tmp_path / "out"))
    assert exported.returncode == 0, exported.stderr
    assert "wrote 1 images (cat 1)" in exported.stdout
    assert f"left out (a tie: Cat 1, Dog 1): {disputed}" in exported.stdout

    deleted = run_cli("feedback", "delete", disputed, "--database", database)
    assert deleted.returncode == 0, deleted.stderr
    assert f"deleted image {disputed} and its 2 label(s)" in deleted.stdout
    again = run_cli("feedback", "delete", disputed, "--database", database)
    assert again.returncode == 1
    assert "no image" in again.stderr
    store = FeedbackStore(database)
    assert store.counts() == (1, 1)
    store.close()
    assert run_cli("feedback", "export", "--out", str(tmp_path / "x")).returncode != 0  # no database given


def test_feedback_purge_and_erase_delete_what_they_say(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from cats_dogs_other.feedback import FeedbackRecord, FeedbackStore

    database = f"sqlite:///{tmp_path / 'feedback.db'}"
    store = FeedbackStore(database)
    now = datetime.now(UTC)
    store.add(FeedbackRecord("a" * 64, b"png", 1, 1, "Cat", "alice"), now=now - timedelta(days=40))
    store.add(FeedbackRecord("b" * 64, b"png", 1, 1, "Cat", "alice"), now=now - timedelta(days=10))
    store.add(FeedbackRecord("b" * 64, b"png", 1, 1, "Dog", "bob"), now=now - timedelta(days=10))
    store.add(FeedbackRecord("c" * 64, b"png", 1, 1, "Dog", "bob"), now=now)
    store.close()

    kept = run_cli("feedback", "purge", "--database", database)  # FEEDBACK_RETENTION_DAYS: 180
    assert "deleted 0 labels older than 180 days and 0 images" in kept.stdout, kept.stderr
    purged = run_cli("feedback", "purge", "--database", database, "--retention-days", "30")
    assert "deleted 1 labels older than 30 days and 1 images" in purged.stdout, purged.stderr
    erased = run_cli("feedback", "erase", "--subject", "bob", "--database", database)
    assert "erased 2 labels of that subject and 1 images nobody else labelled" in erased.stdout, erased.stderr
    store = FeedbackStore(database)
    assert [(entry.sha256, entry.labels) for entry in store.labelled_images()] == [("b" * 64, ["Cat"])]
    store.close()
