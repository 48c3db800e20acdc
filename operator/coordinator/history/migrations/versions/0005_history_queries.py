"""What ``coordinator history runs|events|results`` filters by: indexes, and the state of each result.

The correlation ID (the run's UID) and the scenario filters have their indexes already (the runs' primary key,
the events' and results' ``(run_uid, ...)`` unique keys, the scenario index). New: the runs by phase, the events
by fault type and by target name (the target index leads with the kind, which the command line does not take),
and the results by type. The report's covering indexes (scenario, namespace) gain the duration, which the report's
mean duration reads: without it the aggregates would read every run's wide row. ``state`` keeps an assertion's ``skipped`` and ``error`` apart from ``failed``; rows
written before get it from what they recorded (passed or failed; a probe whose verdict was Error, error; a probe
without a verdict stays NULL), so ``--status`` finds them too.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    p = context.config.attributes["table_prefix"]
    op.add_column(f"{p}_test_results", sa.Column("state", sa.String(16), comment="passed, failed, skipped or error"))
    op.create_index(f"{p}_runs_phase_ix", f"{p}_test_runs", ["phase", "completed_at"])
    op.create_index(f"{p}_events_fault_ix", f"{p}_chaos_events", ["fault", "run_uid"])
    op.create_index(f"{p}_events_name_ix", f"{p}_chaos_events", ["target_name", "target_namespace"])
    op.create_index(f"{p}_results_type_ix", f"{p}_test_results", ["type", "run_uid"])
    _report_indexes(p, ["duration_seconds"])
    results = sa.table(
        f"{p}_test_results",
        sa.column("kind", sa.String),
        sa.column("passed", sa.Boolean),
        sa.column("actual", sa.Text),
        sa.column("state", sa.String),
    )
    # history/records.py writes a probe's result as "<verdict>: <samples>"; an assertion had only passed.
    state = sa.case(
        (results.c.passed == sa.true(), "passed"),
        (sa.and_(results.c.kind == "probe", results.c.actual.like("Error:%")), "error"),
        (results.c.passed == sa.false(), "failed"),
        else_=sa.null(),
    )
    op.execute(results.update().where(results.c.state.is_(None)).values(state=state))


# The report's covering indexes before this revision; it appends the duration to both.
REPORT_INDEXES = {
    "runs_scenario_ix": ["scenario_id", "completed_at", "passed", "recovery_seconds"],
    "runs_namespace_ix": ["namespace", "scenario_id", "completed_at", "passed", "recovery_seconds"],
}


def _report_indexes(p: str, extra: list[str]) -> None:
    for suffix, columns in REPORT_INDEXES.items():
        op.drop_index(f"{p}_{suffix}", table_name=f"{p}_test_runs")
        op.create_index(f"{p}_{suffix}", f"{p}_test_runs", [*columns, *extra])


def downgrade() -> None:
    p = context.config.attributes["table_prefix"]
    _report_indexes(p, [])
    op.drop_index(f"{p}_results_type_ix", table_name=f"{p}_test_results")
    op.drop_index(f"{p}_events_name_ix", table_name=f"{p}_chaos_events")
    op.drop_index(f"{p}_events_fault_ix", table_name=f"{p}_chaos_events")
    op.drop_index(f"{p}_runs_phase_ix", table_name=f"{p}_test_runs")
    op.drop_column(f"{p}_test_results", "state")
