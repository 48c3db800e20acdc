"""The history tables: scenarios, test runs, chaos events, test results.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# Frozen copies of the column types of this revision (later model changes get their own revision).
ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON_DOCUMENT = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    p = context.config.attributes["table_prefix"]
    op.create_table(
        f"{p}_scenarios",
        sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("type", sa.String(32)),
        sa.Column("description", sa.Text),
        sa.Column("steps", sa.Integer),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("namespace", "name", name=f"{p}_scenarios_key"),
        comment="ChaosScenarios that have finished runs.",
    )
    op.create_table(
        f"{p}_test_runs",
        sa.Column(
            "uid", sa.String(64), primary_key=True, comment="The TestRun's metadata.uid: upserts are keyed by it."
        ),
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("scenario_id", ROW_ID, sa.ForeignKey(f"{p}_scenarios.id", ondelete="CASCADE"), nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("passed", sa.Boolean, nullable=False),
        sa.Column("reason", sa.String(128)),
        sa.Column("message", sa.Text),
        sa.Column("dry_run", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True)),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_seconds", sa.Float),
        sa.Column("recovery_seconds", sa.Float),
        sa.Column("resilience_score", sa.Integer),
        sa.Column("targets", sa.Integer),
        sa.Column("status", JSON_DOCUMENT, comment="The TestRun's status as mirrored."),
        sa.Column("mirrored_at", sa.DateTime(timezone=True), nullable=False),
        comment="Finished TestRuns, one row per run UID.",
    )
    op.create_index(f"{p}_runs_completed_ix", f"{p}_test_runs", ["completed_at"])
    op.create_index(
        f"{p}_runs_scenario_ix", f"{p}_test_runs", ["scenario_id", "completed_at", "passed", "recovery_seconds"]
    )
    op.create_index(f"{p}_runs_namespace_ix", f"{p}_test_runs", ["namespace", "completed_at"])
    op.create_table(
        f"{p}_chaos_events",
        sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("run_uid", sa.String(64), sa.ForeignKey(f"{p}_test_runs.uid", ondelete="CASCADE"), nullable=False),
        sa.Column("injection_id", sa.String(512), nullable=False, comment="The ledger id: <step>/<fault>/<target>."),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("step_name", sa.String(63)),
        sa.Column("fault", sa.String(32), nullable=False),
        sa.Column("target_kind", sa.String(32), nullable=False),
        sa.Column("target_namespace", sa.String(63)),
        sa.Column("target_name", sa.String(253), nullable=False),
        sa.Column("target_uid", sa.String(64)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("injected_at", sa.DateTime(timezone=True)),
        sa.Column("reverted_at", sa.DateTime(timezone=True)),
        sa.Column("recovered_at", sa.DateTime(timezone=True)),
        sa.Column("message", sa.Text),
        sa.UniqueConstraint("run_uid", "injection_id", name=f"{p}_events_key"),
        comment="Every fault a run injected (its ledger), with when it was injected, reverted and recovered from.",
    )
    op.create_index(f"{p}_events_target_ix", f"{p}_chaos_events", ["target_kind", "target_namespace", "target_name"])
    op.create_table(
        f"{p}_test_results",
        sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("run_uid", sa.String(64), sa.ForeignKey(f"{p}_test_runs.uid", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False, comment="probe or assertion"),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("type", sa.String(32)),
        sa.Column("passed", sa.Boolean),
        sa.Column("expected", sa.Text),
        sa.Column("actual", sa.Text),
        sa.Column("message", sa.Text),
        sa.UniqueConstraint("run_uid", "kind", "name", name=f"{p}_results_key"),
        comment="Probe and assertion outcomes of each run.",
    )


def downgrade() -> None:
    p = context.config.attributes["table_prefix"]
    op.drop_table(f"{p}_test_results")
    op.drop_table(f"{p}_chaos_events")
    op.drop_table(f"{p}_test_runs")
    op.drop_table(f"{p}_scenarios")
