"""The feedback store's tables and the locks that order writers across workers and replicas.

One schema for SQLite and PostgreSQL (SQLAlchemy Core): recent predictions, the predictions
that were answered but could not be kept, and the corrections.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

metadata = sa.MetaData()
predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("request_id", sa.String(128), primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False, index=True),
    sa.Column("image_sha256", sa.String(64), nullable=False),
    sa.Column("image_ext", sa.String(8), nullable=False),
    sa.Column("image_kept", sa.Boolean, nullable=False),
    sa.Column("width", sa.Integer, nullable=False),
    sa.Column("height", sa.Integer, nullable=False),
    sa.Column("label", sa.String(64), nullable=False),
    sa.Column("probabilities", sa.Text, nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("backend", sa.String(64), nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
)
# Predictions whose row or photo could not be written (store failing, or the background queue
# full): what a correction by their request id is told instead of a false 404.
unkept_predictions = sa.Table(
    "unkept_predictions",
    metadata,
    sa.Column("request_id", sa.String(128), primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False, index=True),
    sa.Column("reason", sa.String(300), nullable=False),
)
feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.Float, nullable=False, index=True),
    # One correction per prediction, and one per (photo, label) for photos sent directly.
    sa.Column("dedup_key", sa.String(300), nullable=False, unique=True),
    sa.Column("request_id", sa.String(128)),
    sa.Column("position", sa.Integer),
    sa.Column("image_sha256", sa.String(64), nullable=False),
    sa.Column("image_ext", sa.String(8), nullable=False),
    sa.Column("label", sa.String(64), nullable=False),
    sa.Column("predicted_label", sa.String(64)),
    sa.Column("note", sa.Text),
    sa.Column("model", sa.String(200)),
)


SCHEMA_LOCK_KEY = 0x6B697463  # pg_advisory_xact_lock key: one schema creator at a time
PHOTO_LOCK_KEY = 0x6B697464  # a photo removal and a correction's insert, one at a time


def lock_photos(connection: sa.Connection) -> None:
    """Inside a transaction: wait for any photo removal or correction in progress. SQLite
    needs nothing (the first write of the transaction takes the database's one write lock)."""
    if connection.dialect.name == "postgresql":
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock(PHOTO_LOCK_KEY)))


def create_schema(engine: sa.Engine, attempts: int = 5) -> None:
    """Create the tables once, also when several workers start together on a new database
    (two concurrent CREATE TABLEs collide in PostgreSQL's catalog: measured with 2 workers)."""
    for attempt in range(attempts):
        try:
            with engine.begin() as connection:
                if engine.dialect.name == "postgresql":
                    connection.execute(sa.select(sa.func.pg_advisory_xact_lock(SCHEMA_LOCK_KEY)))
                metadata.create_all(connection)
            return
        except (IntegrityError, sa.exc.OperationalError, sa.exc.ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))  # another worker is creating them: look again


def insert_new(engine: sa.Engine, table: sa.Table) -> Any:
    """An INSERT that skips rows whose key is already there (both dialects)."""
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()
