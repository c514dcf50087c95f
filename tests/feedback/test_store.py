"""The feedback store against a real SQLite file and a real PostgreSQL server: migrations, the rules of
what is stored, concurrency, and what an unreachable database looks like."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from cats_dogs_other.feedback import FeedbackRecord, FeedbackStore, FeedbackUnavailableError
from cats_dogs_other.feedback.schema import metadata
from tests.servers import free_port


def record(content: bytes, label: str, subject: str | None = None, **extra: str) -> FeedbackRecord:
    return FeedbackRecord(
        hashlib.sha256(content).hexdigest(), b"png:" + content, 4, 3, label, subject, **extra
    )


@pytest.fixture
def store(feedback_database: str) -> FeedbackStore:
    store = FeedbackStore(feedback_database)
    yield store
    store.close()


def test_migrations_build_the_schema_on_an_empty_database_and_are_idempotent(feedback_database: str) -> None:
    first = FeedbackStore(feedback_database)
    assert first.revision() is None
    first.migrate()
    first.migrate()
    assert first.revision() == FeedbackStore.head_revision() == "0001"
    first.add(record(b"a", "Cat", "alice"))
    first.close()

    again = FeedbackStore(feedback_database)  # a restart, or a second replica
    again.migrate()
    assert again.revision() == "0001"
    assert again.counts() == (1, 1)
    with again.engine.connect() as connection:
        assert set(inspect(connection).get_table_names()) >= {"feedback_images", "feedback_labels"}
        # The migrated database is what schema.py declares: nothing to autogenerate.
        assert compare_metadata(MigrationContext.configure(connection), metadata) == []
    again.close()


def test_replicas_migrating_at_once_take_turns(feedback_database: str) -> None:
    stores = [FeedbackStore(feedback_database) for _ in range(4)]
    errors: list[BaseException] = []

    def migrate(store: FeedbackStore) -> None:
        try:
            store.migrate()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=migrate, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert {store.revision() for store in stores} == {"0001"}
    for store in stores:
        store.close()


def test_an_image_is_stored_once_and_each_person_has_one_label_on_it(store: FeedbackStore) -> None:
    first = store.add(record(b"photo", "Cat", "alice", predicted="Cat"))
    assert not first.replaced
    again = store.add(record(b"photo", "Dog", "alice", predicted="Cat"))  # alice changes her mind
    assert again.id == first.id
    assert again.replaced
    store.add(record(b"photo", "Dog", "bob"))
    store.add(record(b"photo", "Cat"))  # anonymous answers (auth off) are each their own row
    store.add(record(b"photo", "Cat"))
    store.add(record(b"other photo", "Other", "alice"))

    assert store.counts() == (2, 5)
    by_image = {entry.sha256: sorted(entry.labels) for entry in store.labelled_images()}
    assert by_image == {
        hashlib.sha256(b"photo").hexdigest(): ["Cat", "Cat", "Dog", "Dog"],
        hashlib.sha256(b"other photo").hexdigest(): ["Other"],
    }
    assert store.image_png(hashlib.sha256(b"photo").hexdigest()) == b"png:photo"


def test_deleting_an_image_removes_it_and_all_its_labels(store: FeedbackStore) -> None:
    store.add(record(b"mine", "Cat", "alice"))
    store.add(record(b"mine", "Dog", "bob"))
    store.add(record(b"theirs", "Dog", "bob"))
    sha256 = hashlib.sha256(b"mine").hexdigest()

    assert store.delete(sha256) == 2
    assert store.counts() == (1, 1)
    assert store.image_png(sha256) is None
    assert store.delete(sha256) == -1


def test_concurrent_writers_lose_nothing(store: FeedbackStore) -> None:
    """8 threads x 25 answers, on 50 images shared between them: every answer is a row."""
    store.migrate()
    failures: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            for n in range(25):
                store.add(record(f"image {n * 2 + worker % 2}".encode(), "Dog", f"person {worker}"))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert store.counts() == (50, 200)


def test_an_unreachable_database_is_feedback_unavailable_without_its_password(tmp_path: Path) -> None:
    closed = free_port()
    store = FeedbackStore(f"postgresql://writer:s3cret-pw@127.0.0.1:{closed}/feedback")
    with pytest.raises(FeedbackUnavailableError) as raised:
        store.add(record(b"x", "Cat", "alice"))
    assert "s3cret" not in str(raised.value)
    assert "127.0.0.1" not in str(raised.value)
    assert "s3cret" not in store.describe()

    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("the database's folder cannot be made here")
    with pytest.raises(FeedbackUnavailableError):
        FeedbackStore(f"sqlite:///{not_a_folder / 'feedback.db'}").add(record(b"x", "Cat"))


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u@h/db", "not supported"),
        ("sqlite://", "needs a file"),
        ("sqlite:///:memory:", "needs a file"),
    ],
)
def test_unsupported_urls_are_configuration_errors(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FeedbackStore(url)


def test_a_person_withdraws_their_label_and_the_image_goes_with_the_last_one(store: FeedbackStore) -> None:
    sha256 = hashlib.sha256(b"shared").hexdigest()
    store.add(record(b"shared", "Cat", "alice"))
    store.add(record(b"shared", "Dog", "bob"))

    assert store.withdraw(sha256, "alice")
    assert store.counts() == (1, 1)  # bob's label, and the image, stay
    assert not store.withdraw(sha256, "alice")
    assert store.withdraw(sha256, "bob")
    assert store.counts() == (0, 0)
    assert store.image_png(sha256) is None
