"""Alembic's entry point, run by `FeedbackStore.migrate` on the connection it passes (never from a URL in
an ini file: the service's settings are the one source of the database URL)."""

from __future__ import annotations

from alembic import context

from cats_dogs_other.feedback.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
