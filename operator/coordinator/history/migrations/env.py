"""Alembic environment: migrations run on the connection and table prefix that ``upgrade()`` hands over."""

from __future__ import annotations

import zlib

from alembic import context
from sqlalchemy import text

from coordinator.history.models import history_tables, version_table

config = context.config
connection = config.attributes.get("connection")
prefix = config.attributes.get("table_prefix")
if connection is None or not prefix:
    raise RuntimeError("run the history migrations through `coordinator db upgrade`, not the alembic command")

context.configure(
    connection=connection,
    target_metadata=history_tables(prefix).metadata,
    version_table=version_table(prefix),
    # SQLite alters tables by copying them; batch mode makes later revisions work on both backends.
    render_as_batch=True,
)
with context.begin_transaction():
    if connection.dialect.name == "postgresql":
        # Two operator replicas starting together must not both create the tables: one waits for the other.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": zlib.crc32(prefix.encode())})
    context.run_migrations()
