"""Feedback images and their labels.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feedback_images",
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("png", sa.LargeBinary(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name="pk_feedback_images"),
    )
    op.create_table(
        "feedback_labels",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("image_sha256", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(255), nullable=True),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("predicted", sa.String(64), nullable=True),
        sa.Column("model_sha256", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_sha256"],
            ["feedback_images.sha256"],
            name="fk_feedback_labels_image_sha256",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_feedback_labels"),
        sa.UniqueConstraint("image_sha256", "subject", name="uq_feedback_labels_image_sha256_subject"),
    )
    op.create_index("ix_feedback_labels_created_at", "feedback_labels", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_feedback_labels_created_at", table_name="feedback_labels")
    op.drop_table("feedback_labels")
    op.drop_table("feedback_images")
