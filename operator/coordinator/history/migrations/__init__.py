"""Alembic migrations of the history tables, run programmatically (no alembic.ini).

Every revision creates or alters the tables of one instance: the table prefix is handed to ``env.py`` and the
revisions through ``Config.attributes["table_prefix"]``, and each instance keeps its own version table, so
instances sharing a database migrate independently.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from coordinator.history.models import version_table

MIGRATIONS_DIR = Path(__file__).resolve().parent


def alembic_config(connection: Connection, prefix: str) -> Config:
    """An Alembic configuration that migrates ``prefix``'s tables over an open connection."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    config.attributes["table_prefix"] = prefix
    return config


def current_revision(connection: Connection, prefix: str) -> str | None:
    """The revision ``prefix``'s tables are at (None before the first upgrade)."""
    context = MigrationContext.configure(connection, opts={"version_table": version_table(prefix)})
    return context.get_current_revision()


def upgrade(connection: Connection, prefix: str, revision: str = "head") -> str | None:
    """Upgrade ``prefix``'s tables to ``revision`` (default: the newest); returns the revision reached."""
    command.upgrade(alembic_config(connection, prefix), revision)
    return current_revision(connection, prefix)
