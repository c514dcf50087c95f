"""The feedback store against a real SQLite file and a real PostgreSQL server: migrations, the rules of
what is stored and for how long, quotas, erasure, concurrency, and what an unreachable database looks
like."""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from cats_dogs_other.feedback import (
    FeedbackPolicy,
    FeedbackQuotaError,
    FeedbackRecord,
    FeedbackStore,
    FeedbackStoreFullError,
    FeedbackUnavailableError,
    Removed,
)
from cats_dogs_other.feedback.schema import metadata
from cats_dogs_other.feedback.store import MIGRATIONS
from tests.servers import free_port


def record(content: bytes, label: str, subject: str | None = None, **extra: str) -> FeedbackRecord:
    return FeedbackRecord(
        hashlib.sha256(content).hexdigest(), b"png:" + content, 4, 3, label, subject, **extra
    )


def sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


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
    assert first.revision() == FeedbackStore.head_revision() == "0002"
    first.add(record(b"a", "Cat", "alice"))
    first.close()

    again = FeedbackStore(feedback_database)  # a restart, or a second replica
    again.migrate()
    assert again.revision() == "0002"
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
    assert {store.revision() for store in stores} == {"0002"}
    for store in stores:
        store.close()


def test_an_image_is_stored_once_and_each_person_has_one_label_on_it(store: FeedbackStore) -> None:
    first = store.add(record(b"photo", "Cat", "alice", predicted="Cat"))
    assert not first.replaced
    again = store.add(record(b"photo", "Dog", "alice", predicted="Cat"))  # alice changes her mind
    assert again.id == first.id
    assert again.replaced
    store.add(record(b"photo", "Dog", "bob"))
    store.add(record(b"photo", "Other"))  # anonymous answers (auth off) are one vote, the latest
    assert store.add(record(b"photo", "Cat")).replaced
    store.add(record(b"other photo", "Other", "alice"))

    assert store.counts() == (2, 4)
    by_image = {entry.sha256: sorted(entry.labels) for entry in store.labelled_images()}
    assert by_image == {
        hashlib.sha256(b"photo").hexdigest(): ["Cat", "Dog", "Dog"],
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


def test_a_hundred_anonymous_answers_on_one_image_are_one_vote(store: FeedbackStore) -> None:
    for subject in ("alice", "bob", "carol"):
        store.add(record(b"a cat", "Cat", subject))
    for n in range(100):
        store.add(record(b"a cat", "Dog", sender=f"client {n % 3}"))
    [entry] = store.labelled_images()
    assert sorted(entry.labels) == ["Cat", "Cat", "Cat", "Dog"]


def test_upgrading_collapses_the_anonymous_answers_already_stored(feedback_database: str) -> None:
    """A database at revision 0001 (anonymous answers each a row) keeps each image's latest one."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    old = FeedbackStore(feedback_database)
    with old.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
        connection.execute(
            text("INSERT INTO feedback_images VALUES (:sha, :png, 4, 3, :at)"),
            {"sha": sha(b"x"), "png": b"png", "at": datetime(2026, 1, 1, tzinfo=UTC)},
        )
        for n, label in enumerate(["Cat", "Dog", "Other"]):
            connection.execute(
                text(
                    "INSERT INTO feedback_labels (id, image_sha256, subject, label, created_at, updated_at) "
                    "VALUES (:id, :sha, NULL, :label, :at, :at)"
                ),
                {
                    "id": f"id-{n}",
                    "sha": sha(b"x"),
                    "label": label,
                    "at": datetime(2026, 1, 1 + n, tzinfo=UTC),
                },
            )
    old.close()

    upgraded = FeedbackStore(feedback_database)
    upgraded.migrate()
    assert upgraded.revision() == "0002"
    assert [entry.labels for entry in upgraded.labelled_images()] == [["Other"]]
    upgraded.close()


def test_past_the_daily_quota_a_sender_may_change_a_label_not_add_one(feedback_database: str) -> None:
    store = FeedbackStore(feedback_database, FeedbackPolicy(daily_quota=3))
    start = datetime(2026, 12, 1, 12, tzinfo=UTC)

    def add(content: bytes, label: str, who: str, after: timedelta) -> bool:
        return store.add(record(content, label, who, sender=who), now=start + after).replaced

    for n in range(3):
        add(f"image {n}".encode(), "Cat", "alice", timedelta(hours=n))
    with pytest.raises(FeedbackQuotaError) as raised:
        add(b"image 3", "Cat", "alice", timedelta(hours=3))
    assert raised.value.retry_after_seconds == 21 * 3600 + 1  # when the first of the three turns a day old
    assert add(b"image 0", "Dog", "alice", timedelta(hours=3))  # changing a label she holds
    add(b"image 3", "Cat", "bob", timedelta(hours=3))  # bob's quota is his own
    # A day and an hour later, image 1's label has left the window (image 0's was changed at 3 h).
    add(b"image 4", "Cat", "alice", timedelta(days=1, hours=1, minutes=1))
    assert store.counts() == (5, 5)
    store.close()


def test_past_the_size_cap_new_images_are_refused_and_labels_on_stored_ones_still_count(
    feedback_database: str,
) -> None:
    store = FeedbackStore(feedback_database, FeedbackPolicy(max_store_bytes=1))  # full from the start
    store.migrate()
    with pytest.raises(FeedbackStoreFullError):
        store.add(record(b"new", "Cat", "alice"))
    assert store.counts() == (0, 0)  # nothing written
    roomy = FeedbackStore(feedback_database)
    roomy.add(record(b"stored", "Cat", "alice"))
    roomy.close()
    store.add(record(b"stored", "Dog", "bob"))  # a vote on an image already kept adds no image
    assert store.counts() == (1, 2)
    assert store.size_bytes() > 0
    store.close()


def test_purge_deletes_expired_labels_and_images_nobody_refers_to(feedback_database: str) -> None:
    store = FeedbackStore(feedback_database, FeedbackPolicy(retention=timedelta(days=30)))
    day = datetime(2026, 1, 1, tzinfo=UTC)
    store.add(record(b"old", "Cat", "alice"), now=day)
    store.add(record(b"shared", "Cat", "alice"), now=day)
    store.add(record(b"shared", "Dog", "bob"), now=day + timedelta(days=20))
    store.add(record(b"renewed", "Cat", "alice"), now=day)
    store.add(record(b"renewed", "Dog", "alice"), now=day + timedelta(days=25))  # changed: kept longer

    assert store.purge(now=day + timedelta(days=31)) == Removed(labels=2, images=1)
    assert {entry.sha256: entry.labels for entry in store.labelled_images()} == {
        sha(b"shared"): ["Dog"],
        sha(b"renewed"): ["Dog"],
    }
    assert store.image_png(sha(b"old")) is None
    assert store.purge(now=day + timedelta(days=31)) == Removed(0, 0)
    assert store.purge(now=day + timedelta(days=60)) == Removed(labels=2, images=2)
    assert store.counts() == (0, 0)
    assert FeedbackStore(feedback_database).purge() == Removed(0, 0)  # no retention: nothing goes
    store.close()


def test_purged_and_erased_images_are_gone_from_the_sqlite_files(tmp_path: Path) -> None:
    """Not only unlinked: the bytes of a deleted image are in neither the database file nor its log."""
    database = tmp_path / "feedback.db"
    store = FeedbackStore(f"sqlite:///{database}", FeedbackPolicy(retention=timedelta(days=1)))
    secrets = [f"a photo of someone's pet #{n} ".encode() * 200 for n in range(3)]
    day = datetime(2026, 1, 1, tzinfo=UTC)
    store.add(record(secrets[0], "Cat", "alice"), now=day)
    store.add(record(secrets[1], "Dog", "bob"), now=day + timedelta(days=5))
    store.add(record(secrets[2], "Dog", "carol"), now=day + timedelta(days=5))

    def found(secret: bytes) -> bool:  # a piece: a blob over a page is split across overflow pages
        files = [database, database.with_name(database.name + "-wal")]
        return any(secret[:28] in path.read_bytes() for path in files if path.exists())

    assert all(found(secret) for secret in secrets)
    assert store.purge(now=day + timedelta(days=3)) == Removed(1, 1)
    assert not found(secrets[0])
    assert store.erase("bob") == Removed(1, 1)
    assert not found(secrets[1])
    assert found(secrets[2])
    store.close()


def test_erasing_a_subject_keeps_what_others_labelled(store: FeedbackStore) -> None:
    store.add(record(b"only mine", "Cat", "alice"))
    store.add(record(b"shared", "Cat", "alice"))
    store.add(record(b"shared", "Cat", "bob"))
    store.add(record(b"theirs", "Dog", "bob"))
    long_subject = "x" * 300  # stored as its hash: erasing by the same subject finds it
    store.add(record(b"long", "Dog", long_subject))

    assert store.erase("alice") == Removed(labels=2, images=1)
    assert {entry.sha256: entry.labels for entry in store.labelled_images()} == {
        sha(b"shared"): ["Cat"],
        sha(b"theirs"): ["Dog"],
        sha(b"long"): ["Dog"],
    }
    assert store.erase("alice") == Removed(0, 0)
    assert store.erase(long_subject) == Removed(1, 1)
