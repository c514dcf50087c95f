"""One anonymous vote per image, the sender of each label (for quotas), and an index for retention.

Anonymous labels already stored are collapsed to the latest per image, as new ones now are.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("feedback_labels", sa.Column("sender", sa.String(64), nullable=True))
    # Keep each image's latest anonymous label (ties broken by id), delete the rest.
    op.execute(
        """
        DELETE FROM feedback_labels
        WHERE subject IS NULL AND EXISTS (
            SELECT 1 FROM feedback_labels AS newer
            WHERE newer.subject IS NULL
              AND newer.image_sha256 = feedback_labels.image_sha256
              AND (newer.updated_at > feedback_labels.updated_at
                   OR (newer.updated_at = feedback_labels.updated_at AND newer.id > feedback_labels.id))
        )
        """
    )
    where = sa.text("subject IS NULL")
    op.create_index(
        "uq_feedback_labels_anonymous",
        "feedback_labels",
        ["image_sha256"],
        unique=True,
        sqlite_where=where,
        postgresql_where=where,
    )
    op.create_index("ix_feedback_labels_updated_at", "feedback_labels", ["updated_at"])
    op.create_index("ix_feedback_labels_sender_updated_at", "feedback_labels", ["sender", "updated_at"])


def downgrade() -> None:
    op.drop_index("ix_feedback_labels_sender_updated_at", table_name="feedback_labels")
    op.drop_index("ix_feedback_labels_updated_at", table_name="feedback_labels")
    op.drop_index("uq_feedback_labels_anonymous", table_name="feedback_labels")
    op.drop_column("feedback_labels", "sender")
