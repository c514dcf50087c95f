"""The feedback tables. Changing them means a new migration in `migrations/versions/` (a test compares
the migrated database with these definitions)."""

from __future__ import annotations

from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

SHA256_LENGTH = 64

metadata = MetaData(
    naming_convention={
        "pk": "pk_%(table_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s_%(column_1_name)s",
        "ix": "ix_%(table_name)s_%(column_0_name)s",
    }
)

# One row per image content: `sha256` of the bytes sent (of the embedded image, for a PDF's image);
# `png` is the image as training data: upright RGB, no metadata, the longer side at most 512 pixels.
images = Table(
    "feedback_images",
    metadata,
    Column("sha256", String(SHA256_LENGTH), primary_key=True),
    Column("png", LargeBinary, nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# One row per person and image: the same person labelling the same image again replaces the row.
# `subject` is the token's `sub` (nothing else of the token); NULL when authentication is off, and then
# all anonymous answers on an image are one row, the latest (one vote: a client cannot stuff them).
# `sender` is a sha256 of who sent the row's latest answer (the `sub`, or with authentication off the
# client's address): what the daily quota counts, without keeping the address itself.
labels = Table(
    "feedback_labels",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "image_sha256",
        String(SHA256_LENGTH),
        ForeignKey("feedback_images.sha256", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("subject", String(255), nullable=True),
    Column("label", String(64), nullable=False),
    Column("predicted", String(64), nullable=True),
    Column("model_sha256", String(SHA256_LENGTH), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("sender", String(SHA256_LENGTH), nullable=True),
    UniqueConstraint("image_sha256", "subject"),
    Index(None, "created_at"),
    Index(None, "updated_at"),
    Index("ix_feedback_labels_sender_updated_at", "sender", "updated_at"),
)

# SQLite and PostgreSQL treat NULLs as distinct in a unique constraint: this partial index is what makes
# the anonymous answers on one image a single row.
ANONYMOUS_INDEX = "uq_feedback_labels_anonymous"
Index(
    ANONYMOUS_INDEX,
    labels.c.image_sha256,
    unique=True,
    sqlite_where=labels.c.subject.is_(None),
    postgresql_where=labels.c.subject.is_(None),
)
