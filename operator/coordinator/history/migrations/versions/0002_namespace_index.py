"""The namespace index carries what the report aggregates read.

With ``(namespace, completed_at)``, SQLite (after ANALYZE) answered ``coordinator report --namespace`` over
100,000 runs by walking the whole scenario index in GROUP BY order and reading every row to test its namespace:
218 ms for the totals query alone. ``(namespace, scenario_id, completed_at, passed, recovery_seconds)`` is a
covering range scan in group order instead: 3.6 ms (benchmarks/README.md).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import context, op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    p = context.config.attributes["table_prefix"]
    op.drop_index(f"{p}_runs_namespace_ix", table_name=f"{p}_test_runs")
    op.create_index(
        f"{p}_runs_namespace_ix",
        f"{p}_test_runs",
        ["namespace", "scenario_id", "completed_at", "passed", "recovery_seconds"],
    )


def downgrade() -> None:
    p = context.config.attributes["table_prefix"]
    op.drop_index(f"{p}_runs_namespace_ix", table_name=f"{p}_test_runs")
    op.create_index(f"{p}_runs_namespace_ix", f"{p}_test_runs", ["namespace", "completed_at"])
