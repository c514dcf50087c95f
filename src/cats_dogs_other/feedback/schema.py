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
# every answer is a row of its own.
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
    UniqueConstraint("image_sha256", "subject"),
    Index(None, "created_at"),
)
