"""Where people's corrections go: SQLAlchemy over SQLite (one machine) or PostgreSQL (replicas).

The store is synchronous; the service calls it from worker threads (`add` and friends are awaitable
wrappers that never run a query on the event loop). The schema is Alembic's: `migrate` brings any
database to the newest revision, under a lock so that replicas starting together take turns.
A database that cannot be reached raises `FeedbackUnavailableError`, never anything driver-specific.

What is kept is bounded (`FeedbackPolicy`): labels older than the retention are purged with the images
nobody's label refers to any more, one sender adds at most a daily quota of labels, and new images are
refused once the store is past its size cap. Deleted bytes are gone from the file, not just unlinked:
SQLite overwrites freed content (`secure_delete`), and purges and erasures compact the file.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import anyio
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, delete, event, exists, func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from cats_dogs_other.feedback.schema import images, labels

log = logging.getLogger(__name__)
T = TypeVar("T")

MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant shared by every replica: PostgreSQL's advisory lock that serialises migrations.
MIGRATION_LOCK_KEY = 0x0CD0FEED
CONNECT_TIMEOUT_SECONDS = 5
SQLITE_BUSY_TIMEOUT_SECONDS = 30


UNAVAILABLE = "The feedback database cannot be reached."  # for people; the log names the operation


class FeedbackUnavailableError(RuntimeError):
    """The database cannot be reached or written right now; the message is safe to show (no URL)."""


class FeedbackQuotaError(RuntimeError):
    """This sender added as many labels as a day allows; the message is safe to show."""

    def __init__(self, message: str, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds  # until their oldest label of the day counts no more


class FeedbackStoreFullError(RuntimeError):
    """The store is past its size cap: no new image until some are purged or erased."""


QUOTA_WINDOW = timedelta(days=1)


@dataclass(frozen=True)
class FeedbackPolicy:
    """What the store keeps, and how much one sender may add (FEEDBACK_* settings); None: no bound."""

    retention: timedelta | None = None
    daily_quota: int | None = None
    max_store_bytes: int | None = None


@dataclass(frozen=True)
class Removed:
    """What a purge or an erasure deleted."""

    labels: int
    images: int


@dataclass(frozen=True)
class FeedbackRecord:
    """What a person said about an image, as the API received it."""

    sha256: str
    png: bytes
    width: int
    height: int
    label: str
    subject: str | None = None
    predicted: str | None = None
    model_sha256: str | None = None
    sender: str | None = None  # a sha256 of who sent it (api: the client key), for the daily quota


@dataclass(frozen=True)
class Stored:
    id: str
    replaced: bool  # the same person had labelled this image before: their label was replaced


@dataclass(frozen=True)
class ImageLabels:
    """One image's labels: one per person who labelled it, and one for all anonymous answers."""

    sha256: str
    labels: list[str]
    first_at: datetime


SUBJECT_LENGTH = 255  # the column's size


def stored_subject(subject: str) -> str:
    """How a token's `sub` is stored: as it is, or past the column's size as its sha256 (distinct
    subjects stay distinct). Erasing by subject goes through the same mapping."""
    if len(subject) > SUBJECT_LENGTH:
        return "sha256:" + hashlib.sha256(subject.encode()).hexdigest()
    return subject


def redacted(url: str) -> str:
    """The URL without its password, for logs."""
    return make_url(url).render_as_string(hide_password=True)


class FeedbackStore:
    def __init__(self, url: str, policy: FeedbackPolicy | None = None) -> None:
        self.policy = policy or FeedbackPolicy()
        parsed = make_url(url)  # ArgumentError for a malformed URL: a configuration error, at start
        self.url = url
        self.dialect = parsed.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"FEEDBACK_DATABASE_URL: {self.dialect} is not supported (sqlite, postgresql)")
        self.sqlite_path: Path | None = None
        if self.dialect == "sqlite":
            if not parsed.database or parsed.database == ":memory:":
                raise ValueError("FEEDBACK_DATABASE_URL: SQLite needs a file (sqlite:///path/to/file.db)")
            self.sqlite_path = Path(parsed.database)
            with suppress(OSError):  # if it cannot be made, connecting fails: FeedbackUnavailableError
                self.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_engine(
                parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False}
            )
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            if parsed.drivername == "postgresql":
                parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3, not psycopg2
            self.engine = create_engine(
                parsed,
                pool_pre_ping=True,  # a replica outlives database restarts
                pool_timeout=CONNECT_TIMEOUT_SECONDS,
                connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
            )
        # SQLite has one writer at a time: one thread per process writes, the others wait their turn
        # here rather than in SQLite's busy loop. PostgreSQL gets as many as the connection pool holds.
        self.limiter = anyio.CapacityLimiter(1 if self.dialect == "sqlite" else 5)
        self._migrated = False
        self._migrate_lock = threading.Lock()

    def describe(self) -> str:
        return redacted(self.url)

    # --- schema ---------------------------------------------------------------------------------------

    def migrate(self) -> None:
        """Bring the database to the newest schema (idempotent); FeedbackUnavailableError if unreachable."""
        with self._migrate_lock, _unavailable_on_error("migrate"):
            if self._migrated:
                return
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            with self._process_lock(), self.engine.begin() as connection:
                if self.dialect == "postgresql":
                    connection.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                    )
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
            self._migrated = True

    def revision(self) -> str | None:
        """The database's schema revision (None for an empty database)."""
        with _unavailable_on_error("read"), self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    @staticmethod
    def head_revision() -> str | None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        return ScriptDirectory.from_config(config).get_current_head()

    @contextmanager
    def _process_lock(self) -> Iterator[None]:
        """SQLite has no advisory locks: processes sharing the file take turns on a lock file beside it."""
        if self.sqlite_path is None:
            yield
            return
        with open(self.sqlite_path.with_name(self.sqlite_path.name + ".migrate-lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # --- writes ---------------------------------------------------------------------------------------

    def add(self, record: FeedbackRecord, now: datetime | None = None) -> Stored:
        """Store the image once per content and this person's label (replacing their earlier one; all
        anonymous answers on an image are one label, the latest). FeedbackQuotaError past the sender's
        daily quota, FeedbackStoreFullError for a new image past the size cap: nothing is written."""
        self.migrate()
        now = now or datetime.now(UTC)
        if record.subject is not None:
            record = replace(record, subject=stored_subject(record.subject))
        image_row = {
            "sha256": record.sha256,
            "png": record.png,
            "width": record.width,
            "height": record.height,
            "created_at": now,
        }
        label_row = {
            "image_sha256": record.sha256,
            "subject": record.subject,
            "label": record.label,
            "predicted": record.predicted,
            "model_sha256": record.model_sha256,
            "sender": record.sender,
            "updated_at": now,
        }
        insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        with _unavailable_on_error("write"), self.engine.begin() as connection:
            # The first statement writes, so SQLite takes its write lock at once (no lock upgrade later);
            # a refusal below rolls it back.
            # (RETURNING, not rowcount: psycopg reports -1 for an INSERT that did nothing.)
            new_image = connection.execute(
                insert(images).values(image_row).on_conflict_do_nothing().returning(images.c.sha256)
            ).first()
            self._check_quota(connection, record, now)
            cap = self.policy.max_store_bytes
            if new_image and cap is not None and self._size_bytes(connection) > cap:
                raise FeedbackStoreFullError(
                    "The feedback store is full: no new image is kept until the operator purges or "
                    "erases some (cats-dogs-other feedback purge) or raises FEEDBACK_MAX_STORE_BYTES."
                )
            statement = insert(labels).values(id=str(uuid.uuid4()), created_at=now, **label_row)
            changed = ("label", "predicted", "model_sha256", "sender", "updated_at")
            set_ = {key: statement.excluded[key] for key in changed}
            if record.subject is None:
                upsert = statement.on_conflict_do_update(
                    index_elements=["image_sha256"], index_where=labels.c.subject.is_(None), set_=set_
                )
            else:
                upsert = statement.on_conflict_do_update(
                    index_elements=["image_sha256", "subject"], set_=set_
                )
            row = connection.execute(upsert.returning(labels.c.id, labels.c.created_at)).one()
            return Stored(row.id, replaced=_as_utc(row.created_at) < now)

    def _check_quota(self, connection: Connection, record: FeedbackRecord, now: datetime) -> None:
        """Past the daily quota, a sender may still change a label they hold, not add one."""
        quota = self.policy.daily_quota
        if quota is None or record.sender is None:
            return
        same_voter = (
            labels.c.subject == record.subject if record.subject is not None else labels.c.subject.is_(None)
        )
        theirs = (labels.c.image_sha256 == record.sha256) & same_voter & (labels.c.sender == record.sender)
        if connection.execute(select(exists().where(theirs))).scalar_one():
            return
        recent = (labels.c.sender == record.sender) & (labels.c.updated_at > now - QUOTA_WINDOW)
        count, oldest = connection.execute(
            select(func.count(), func.min(labels.c.updated_at)).where(recent)
        ).one()
        if count >= quota:
            wait = _as_utc(oldest) + QUOTA_WINDOW - now
            raise FeedbackQuotaError(
                f"You have sent {quota} labels in the last 24 hours, as many as this service keeps from "
                "one person a day: try again later (changing a label you already sent still works).",
                max(1, int(wait.total_seconds()) + 1),
            )

    def _size_bytes(self, connection: Connection) -> int:
        if self.dialect == "sqlite":
            pages = connection.execute(text("PRAGMA page_count")).scalar_one()
            free = connection.execute(text("PRAGMA freelist_count")).scalar_one()
            size = connection.execute(text("PRAGMA page_size")).scalar_one()
            return int((pages - free) * size)
        tables = "pg_total_relation_size('feedback_images') + pg_total_relation_size('feedback_labels')"
        total = connection.execute(text(f"SELECT {tables}")).scalar_one()
        return int(total)

    def size_bytes(self) -> int:
        """Bytes the store takes: SQLite's pages in use, PostgreSQL's two tables with their indexes."""
        self.migrate()
        with _unavailable_on_error("read"), self.engine.connect() as connection:
            return self._size_bytes(connection)

    def purge(self, now: datetime | None = None) -> Removed:
        """Delete the labels older than the retention (by their last change), then every image nobody's
        label refers to; compact the file when anything went. Nothing is deleted without a retention."""
        self.migrate()
        if self.policy.retention is None:
            return Removed(0, 0)
        cutoff = (now or datetime.now(UTC)) - self.policy.retention
        with _unavailable_on_error("delete"), self.engine.begin() as connection:
            removed = connection.execute(delete(labels).where(labels.c.updated_at < cutoff)).rowcount
            orphans = self._delete_orphan_images(connection)
        if removed or orphans:
            self._compact()
        return Removed(removed, orphans)

    def erase(self, subject: str) -> Removed:
        """Delete everything one person sent: their labels, and the images nobody else labelled."""
        self.migrate()
        with _unavailable_on_error("delete"), self.engine.begin() as connection:
            mine = labels.c.subject == stored_subject(subject)
            removed = connection.execute(delete(labels).where(mine)).rowcount
            orphans = self._delete_orphan_images(connection)
        if removed or orphans:
            self._compact()
        return Removed(removed, orphans)

    @staticmethod
    def _delete_orphan_images(connection: Connection) -> int:
        labelled = exists().where(labels.c.image_sha256 == images.c.sha256)
        return int(connection.execute(delete(images).where(~labelled)).rowcount)

    def _compact(self) -> None:
        """SQLite: rebuild the file without the freed pages and empty the write-ahead log, so that the
        deleted bytes are in neither. PostgreSQL reclaims dead rows itself (autovacuum)."""
        if self.dialect != "sqlite":
            return
        with _unavailable_on_error("compact"), self.engine.connect() as connection:
            autocommit = connection.execution_options(isolation_level="AUTOCOMMIT")
            autocommit.execute(text("VACUUM"))
            autocommit.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))

    def delete(self, sha256: str) -> int:
        """Remove an image and every label of it; the number of labels removed (-1: no such image)."""
        self.migrate()
        with _unavailable_on_error("delete"), self.engine.begin() as connection:
            removed = connection.execute(delete(labels).where(labels.c.image_sha256 == sha256)).rowcount
            found = connection.execute(delete(images).where(images.c.sha256 == sha256)).rowcount
        self._checkpoint()
        return removed if found else -1

    def _checkpoint(self) -> None:
        """SQLite: copy the write-ahead log (with the zeroed pages) into the file and empty it."""
        if self.dialect == "sqlite":
            with _unavailable_on_error("compact"), self.engine.connect() as connection:
                connection.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))

    def withdraw(self, sha256: str, subject: str) -> bool:
        """Remove this person's label of an image, and the image once nobody's label is left on it;
        False when they had none."""
        self.migrate()
        with _unavailable_on_error("delete"), self.engine.begin() as connection:
            mine = (labels.c.image_sha256 == sha256) & (labels.c.subject == stored_subject(subject))
            if not connection.execute(delete(labels).where(mine)).rowcount:
                return False
            left = connection.execute(
                select(func.count()).select_from(labels).where(labels.c.image_sha256 == sha256)
            ).scalar_one()
            if not left:
                connection.execute(delete(images).where(images.c.sha256 == sha256))
        self._checkpoint()
        return True

    # --- reads ----------------------------------------------------------------------------------------

    def labelled_images(self) -> list[ImageLabels]:
        """Every image with its labels, oldest first (labels only: the images are read one by one)."""
        self.migrate()
        query = select(labels.c.image_sha256, labels.c.label, labels.c.created_at).order_by(
            labels.c.created_at, labels.c.id
        )
        found: dict[str, ImageLabels] = {}
        with _unavailable_on_error("read"), self.engine.connect() as connection:
            for sha256, label, created_at in connection.execute(query):
                entry = found.setdefault(sha256, ImageLabels(sha256, [], _as_utc(created_at)))
                entry.labels.append(label)
        return list(found.values())

    def image_png(self, sha256: str) -> bytes | None:
        with _unavailable_on_error("read"), self.engine.connect() as connection:
            png: bytes | None = connection.execute(
                select(images.c.png).where(images.c.sha256 == sha256)
            ).scalar_one_or_none()
        return png

    def counts(self) -> tuple[int, int]:
        """(images, labels) stored."""
        self.migrate()
        with _unavailable_on_error("read"), self.engine.connect() as connection:
            image_count = connection.execute(select(func.count()).select_from(images)).scalar_one()
            label_count = connection.execute(select(func.count()).select_from(labels)).scalar_one()
        return int(image_count), int(label_count)

    def close(self) -> None:
        self.engine.dispose()

    # --- from the event loop --------------------------------------------------------------------------

    async def run(self, work: Callable[[], T]) -> T:
        """`work` (a method of this store) in a worker thread, at most `limiter` at once."""
        return await anyio.to_thread.run_sync(work, limiter=self.limiter)


def _sqlite_pragmas(connection: object, _: object) -> None:
    """WAL lets readers (an export) run beside the writer; foreign keys are off by default in SQLite;
    `secure_delete` overwrites deleted content with zeros instead of leaving it in free pages."""
    cursor = connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


def _as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)  # SQLite drops the zone


@contextmanager
def _unavailable_on_error(action: str) -> Iterator[None]:
    """Connection failures (refused, timed out, dropped, a locked or unreachable file) become one error
    whose message names no host or password; constraint violations and bugs stay what they are."""
    try:
        yield
    except (DBAPIError, PoolTimeoutError) as exc:
        unavailable = isinstance(exc, OperationalError | InterfaceError | PoolTimeoutError) or (
            isinstance(exc, DBAPIError) and exc.connection_invalidated
        )
        if not unavailable:
            raise
        cause = exc.orig if isinstance(exc, DBAPIError) else exc
        log.warning("feedback database unavailable (%s): %s", action, type(cause).__name__)
        raise FeedbackUnavailableError(UNAVAILABLE) from None
    except OSError as exc:  # SQLite's folder or lock file
        log.warning("feedback database unavailable (%s): %s", action, type(exc).__name__)
        raise FeedbackUnavailableError(UNAVAILABLE) from None
