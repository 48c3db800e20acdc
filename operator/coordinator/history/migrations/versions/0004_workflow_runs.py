"""Workflow runs and their children: the parent and child relation on the test runs.

A workflow run (a TestRun with ``spec.workflowRef``) records its ChaosWorkflow (``workflow``, namespace/name) and
its nodes as ``status.nodes`` had them (``nodes``: the report lists Skipped and suspend nodes, which have no run of
their own). A child records the workflow run it belongs to (``parent_uid``, ``parent_name``: its owner reference
and workflow-run label) and its node (``workflow_node``), indexed by parent for the report's grouping. Older rows
keep NULLs: they are plain scenario runs.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

# Frozen copy of the column type of this revision.
JSON_DOCUMENT = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    p = context.config.attributes["table_prefix"]
    table = f"{p}_test_runs"
    op.add_column(
        table,
        sa.Column(
            "workflow", sa.String(317), comment="A workflow run's ChaosWorkflow (namespace/name); NULL otherwise."
        ),
    )
    op.add_column(
        table,
        sa.Column("nodes", JSON_DOCUMENT, comment="A workflow run's nodes (status.nodes), in the workflow's order."),
    )
    op.add_column(
        table, sa.Column("parent_uid", sa.String(64), comment="A workflow child's parent TestRun (metadata.uid).")
    )
    op.add_column(table, sa.Column("parent_name", sa.String(253), comment="A workflow child's parent TestRun's name."))
    op.add_column(table, sa.Column("workflow_node", sa.String(63), comment="The node a workflow child ran."))
    op.create_index(f"{p}_runs_parent_ix", table, ["parent_uid"])


def downgrade() -> None:
    p = context.config.attributes["table_prefix"]
    table = f"{p}_test_runs"
    op.drop_index(f"{p}_runs_parent_ix", table_name=table)
    for column in ("workflow_node", "parent_name", "parent_uid", "nodes", "workflow"):
        op.drop_column(table, column)
