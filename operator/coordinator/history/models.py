"""The history tables: scenarios, test runs, chaos events and test results.

Several operator instances may share one database, so every table, index and the Alembic version table carry a
prefix derived from the instance name (``COORDINATOR_INSTANCE_NAME``). Because the names are only known at run
time, the tables are SQLAlchemy Core ``Table`` objects built per prefix (``history_tables``) rather than
declarative classes, whose table names are fixed when the class is defined. The migrations in ``migrations/``
create exactly these tables; ``tests/e2e/test_history_store.py`` compares the two on both backends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeEngine

# PostgreSQL names are at most 63 bytes: instance names are at most 40 characters, so "<prefix>_<suffix>" fits
# as long as every suffix below stays under 22 characters.
MAX_SUFFIX = 22

# JSONB on PostgreSQL (indexable, compact), plain JSON text elsewhere.
JSON_DOCUMENT: TypeEngine[Any] = JSON().with_variant(JSONB(), "postgresql")
# The same, for an optional document: Python None is SQL NULL (plain JSON would store the JSON value null).
OPTIONAL_JSON_DOCUMENT: TypeEngine[Any] = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
ROW_ID: TypeEngine[int] = BigInteger().with_variant(Integer(), "sqlite")


def table_prefix(instance_name: str) -> str:
    """The identifier prefix for an instance: ``test-coordinator`` -> ``test_coordinator``."""
    prefix = re.sub(r"[^a-z0-9_]", "_", instance_name.lower()).strip("_")
    if not prefix:
        raise ValueError(f"instance name {instance_name!r} gives an empty table prefix")
    if prefix[0].isdigit():
        prefix = f"i{prefix}"
    return prefix


# The newest migration's revision (migrations/versions/); tests/unit/test_history_settings.py checks they agree.
SCHEMA_HEAD = "0005"


def version_table(prefix: str) -> str:
    """Alembic's bookkeeping table for this instance."""
    return f"{prefix}_alembic_version"


@dataclass(frozen=True)
class HistoryTables:
    """One instance's tables, in their own ``MetaData``."""

    prefix: str
    metadata: MetaData
    scenarios: Table
    test_runs: Table
    chaos_events: Table
    test_results: Table


@lru_cache(maxsize=16)
def history_tables(prefix: str) -> HistoryTables:
    """Build (once per prefix) the tables of one operator instance."""
    metadata = MetaData()

    def name(suffix: str) -> str:
        assert len(suffix) <= MAX_SUFFIX, suffix
        return f"{prefix}_{suffix}"

    scenarios = Table(
        name("scenarios"),
        metadata,
        Column("id", ROW_ID, primary_key=True, autoincrement=True),
        Column("namespace", String(63), nullable=False),
        Column("name", String(253), nullable=False),
        Column("type", String(32)),
        Column("description", Text),
        Column("steps", Integer),
        Column("first_seen_at", DateTime(timezone=True), nullable=False),
        Column("last_seen_at", DateTime(timezone=True), nullable=False),
        UniqueConstraint("namespace", "name", name=name("scenarios_key")),
        comment="ChaosScenarios that have finished runs.",
    )
    test_runs = Table(
        name("test_runs"),
        metadata,
        # The run's UID is its correlation ID (in its log lines, Events and probe requests): no column repeats it.
        Column("uid", String(64), primary_key=True, comment="The TestRun's metadata.uid: upserts are keyed by it."),
        Column("namespace", String(63), nullable=False),
        Column("name", String(253), nullable=False),
        Column("scenario_id", ROW_ID, ForeignKey(f"{name('scenarios')}.id", ondelete="CASCADE"), nullable=False),
        Column("phase", String(16), nullable=False),
        Column("passed", Boolean, nullable=False),
        Column("reason", String(128)),
        Column("message", Text),
        Column("dry_run", Boolean, nullable=False),
        Column("created_at", DateTime(timezone=True)),
        Column("started_at", DateTime(timezone=True)),
        Column("completed_at", DateTime(timezone=True), nullable=False),
        Column("duration_seconds", Float),
        Column("recovery_seconds", Float),
        Column("resilience_score", Integer),
        Column("targets", Integer),
        Column("status", JSON_DOCUMENT, comment="The TestRun's status as mirrored."),
        Column("mirrored_at", DateTime(timezone=True), nullable=False),
        # Migration 0003: the audit trail's requester, as a column so reports read it without the wide status.
        Column(
            "requested_by",
            OPTIONAL_JSON_DOCUMENT,
            comment="Who asked for the run (status.requestedBy: username, uid, groups); NULL when none was recorded.",
        ),
        # Migration 0004: the relation of a workflow run and its children (one child per node of the workflow).
        Column("workflow", String(317), comment="A workflow run's ChaosWorkflow (namespace/name); NULL otherwise."),
        Column(
            "nodes",
            OPTIONAL_JSON_DOCUMENT,
            comment="A workflow run's nodes (status.nodes), in the workflow's order.",
        ),
        Column("parent_uid", String(64), comment="A workflow child's parent TestRun (metadata.uid)."),
        Column("parent_name", String(253), comment="A workflow child's parent TestRun's name."),
        Column("workflow_node", String(63), comment="The node a workflow child ran."),
        # The report filters by time window, namespace and scenario, and groups by scenario: each index below
        # leads with one filter, so every combination is a range scan. The
        # scenario index also carries what the aggregates read (verdict, recovery), so per-scenario counts,
        # means, percentiles and "latest N" lookups never read the wide rows (index-only on both backends).
        Index(name("runs_completed_ix"), "completed_at"),
        # Migration 0005 added the duration (the report's mean duration) to both.
        Index(
            name("runs_scenario_ix"), "scenario_id", "completed_at", "passed", "recovery_seconds", "duration_seconds"
        ),
        # The namespace index carries the aggregates' columns too (migration 0002: SQLite otherwise groups through
        # the scenario index and reads every row to check its namespace).
        Index(
            name("runs_namespace_ix"),
            "namespace",
            "scenario_id",
            "completed_at",
            "passed",
            "recovery_seconds",
            "duration_seconds",
        ),
        # A workflow run's children (migration 0004).
        Index(name("runs_parent_ix"), "parent_uid"),
        # coordinator history runs --phase (migration 0005).
        Index(name("runs_phase_ix"), "phase", "completed_at"),
        comment="Finished TestRuns, one row per run UID.",
    )
    chaos_events = Table(
        name("chaos_events"),
        metadata,
        Column("id", ROW_ID, primary_key=True, autoincrement=True),
        Column("run_uid", String(64), ForeignKey(f"{name('test_runs')}.uid", ondelete="CASCADE"), nullable=False),
        Column("injection_id", String(512), nullable=False, comment="The ledger id: <step>/<fault>/<target>."),
        Column("step", Integer, nullable=False),
        Column("step_name", String(63)),
        Column("fault", String(32), nullable=False),
        Column("target_kind", String(32), nullable=False),
        Column("target_namespace", String(63)),
        Column("target_name", String(253), nullable=False),
        Column("target_uid", String(64)),
        Column("state", String(16), nullable=False),
        Column("injected_at", DateTime(timezone=True)),
        Column("reverted_at", DateTime(timezone=True)),
        Column("recovered_at", DateTime(timezone=True)),
        Column("message", Text),
        UniqueConstraint("run_uid", "injection_id", name=name("events_key")),
        Index(name("events_target_ix"), "target_kind", "target_namespace", "target_name"),
        # coordinator history --fault-type and --target NAME (migration 0005): the target index above leads with
        # the kind, which the command line does not ask for.
        Index(name("events_fault_ix"), "fault", "run_uid"),
        Index(name("events_name_ix"), "target_name", "target_namespace"),
        comment="Every fault a run injected (its ledger), with when it was injected, reverted and recovered from.",
    )
    test_results = Table(
        name("test_results"),
        metadata,
        Column("id", ROW_ID, primary_key=True, autoincrement=True),
        Column("run_uid", String(64), ForeignKey(f"{name('test_runs')}.uid", ondelete="CASCADE"), nullable=False),
        Column("kind", String(16), nullable=False, comment="probe or assertion"),
        Column("name", String(63), nullable=False),
        Column("type", String(32)),
        Column("passed", Boolean),
        # Migration 0005: passed, failed, skipped (its probe never ran) or error (its probe errored); NULL for a
        # probe without a verdict and for rows written before.
        Column("state", String(16), comment="passed, failed, skipped or error"),
        Column("expected", Text),
        Column("actual", Text),
        Column("message", Text),
        UniqueConstraint("run_uid", "kind", "name", name=name("results_key")),
        # coordinator history results --assertion-type (migration 0005).
        Index(name("results_type_ix"), "type", "run_uid"),
        comment="Probe and assertion outcomes of each run.",
    )
    return HistoryTables(prefix, metadata, scenarios, test_runs, chaos_events, test_results)
