"""Who asked for each run: ``requested_by`` on the test runs (the TestRun's ``status.requestedBy``).

The correlation ID needs no column: it is the run's UID, already the key of ``test_runs`` and the ``run_uid`` of
its events and results. Older rows keep NULL (nobody was recorded then), which the report shows as no requester.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

# Frozen copy of the column type of this revision.
JSON_DOCUMENT = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    p = context.config.attributes["table_prefix"]
    op.add_column(
        f"{p}_test_runs",
        sa.Column(
            "requested_by",
            JSON_DOCUMENT,
            comment="Who asked for the run (status.requestedBy: username, uid, groups); NULL when none was recorded.",
        ),
    )


def downgrade() -> None:
    p = context.config.attributes["table_prefix"]
    op.drop_column(f"{p}_test_runs", "requested_by")
