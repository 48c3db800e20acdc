"""What a finished TestRun becomes in the history (pure mapping), table naming, and the report CLI's window."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

import pytest

from coordinator.cli.history import parse_moment, parse_since
from coordinator.history.browse import BadQuery, Cursor
from coordinator.history.mirror import needs_mirroring
from coordinator.history.models import history_tables, table_prefix, version_table
from coordinator.history.records import run_record
from coordinator.history.urls import masked
from support.testruns import T0, finished_testrun, workflow_child, workflow_run


def test_a_run_record_has_the_run_and_its_scenario() -> None:
    record = run_record(finished_testrun(name="r", namespace="shop", scenario="kill-web"))
    assert (record.namespace, record.name, record.phase, record.passed) == ("shop", "r", "Passed", True)
    assert (record.scenario.key, record.scenario.type, record.scenario.steps) == ("shop/kill-web", "service_restart", 1)
    assert record.completed_at == T0


def test_the_scenario_comes_from_the_ref_when_the_run_never_resolved_it() -> None:
    run = finished_testrun(namespace="shop")
    run["status"] = {"phase": "Error", "completedAt": "2026-03-01T12:00:00Z"}
    run["spec"] = {"scenarioRef": {"name": "gone", "namespace": "other"}}
    assert run_record(run).scenario.key == "other/gone"


def test_a_plain_run_has_no_workflow_relation() -> None:
    record = run_record(finished_testrun())
    assert (record.workflow, record.nodes, record.parent_uid, record.parent_name, record.node) == (
        None,
        (),
        None,
        None,
        None,
    )


def test_a_workflow_run_records_its_workflow_and_nodes_in_order() -> None:
    parent = workflow_run(name="gd-1", namespace="shop", workflow="game-day")
    record = run_record(parent)
    assert record.workflow == "shop/game-day"
    # Its record's "scenario" is the workflow (a run must name what it ran), with no type to overwrite a
    # same-named scenario's.
    assert (record.scenario.key, record.scenario.type, record.scenario.steps) == ("shop/game-day", None, None)
    assert [(n["name"], n["phase"], n.get("testRun")) for n in record.nodes] == [
        ("kill-cache", "Passed", "gd-1-kill-cache"),
        ("approve", "Passed", None),
        ("kill-db", "Failed", "gd-1-kill-db"),
        ("report", "Skipped", None),
    ]
    assert record.nodes[2]["message"] == "assertion fast failed: recovery 12s > 10s"
    assert (record.events, record.parent_uid, record.node) == ((), None, None)
    assert (record.phase, record.resilience_score) == ("Failed", 50)


def test_a_workflow_run_not_yet_resolved_names_its_workflow_from_the_ref() -> None:
    parent = workflow_run(namespace="shop", workflow="game-day")
    parent["status"] = {"phase": "Error", "completedAt": "2026-03-01T12:00:00Z", "reason": "WorkflowNotFound"}
    record = run_record(parent)
    assert (record.workflow, record.nodes, record.scenario.key) == ("shop/game-day", (), "shop/game-day")


def test_a_child_records_its_parent_and_node() -> None:
    parent = workflow_run(name="gd-1")
    record = run_record(workflow_child(parent, "kill-db", "kill-db", phase="Failed"))
    assert (record.parent_uid, record.parent_name, record.node) == (parent["metadata"]["uid"], "gd-1", "kill-db")
    assert (record.scenario.key, record.workflow) == ("shop/kill-db", None)


def test_a_child_without_its_owner_reference_keeps_its_parent_name() -> None:
    child = workflow_child(workflow_run(name="gd-1"), "kill-db", "kill-db")
    del child["metadata"]["ownerReferences"]
    assert (run_record(child).parent_uid, run_record(child).parent_name) == (None, "gd-1")


def test_a_long_parent_name_comes_from_the_owner_not_the_shortened_label() -> None:
    parent = workflow_run(name="game-day-" + "x" * 70)
    child = workflow_child(parent, "kill-db", "kill-db")
    child["metadata"]["labels"]["chaos.coordinator.dev/workflow-run"] = parent["metadata"]["name"][:63]
    assert run_record(child).parent_name == parent["metadata"]["name"]


def test_an_owner_of_another_kind_is_no_parent() -> None:
    run = finished_testrun()
    run["metadata"]["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "Job", "name": "ci", "uid": "u"}]
    assert run_record(run).parent_name is None


def test_events_come_from_the_ledger_with_recovery_from_their_step() -> None:
    record = run_record(finished_testrun(targets=("web-1", "web-2"), recovery=2.5))
    assert [(e.fault, e.target_name, e.state) for e in record.events] == [
        ("pod-kill", "web-1", "Irreversible"),
        ("pod-kill", "web-2", "Irreversible"),
    ]
    event = record.events[0]
    assert event.injected_at is not None
    assert event.recovered_at == event.injected_at + timedelta(seconds=2.5)
    assert event.step_name == "kill"


def test_without_a_measured_recovery_there_is_no_recovered_time() -> None:
    record = run_record(finished_testrun(recovery=None))
    assert record.events[0].recovered_at is None
    assert record.recovery_seconds is None


def test_assertion_results_keep_expected_and_actual() -> None:
    record = run_record(finished_testrun())
    (assertion,) = [r for r in record.results if r.kind == "assertion"]
    assert (assertion.name, assertion.expected, assertion.actual, assertion.passed) == ("fast", "<= 10", "2.5s", True)


def test_probe_results_summarise_their_samples() -> None:
    probes = [
        {"name": "api", "type": "http", "mode": "during", "samples": 10, "successPercent": 70.0, "verdict": "Failed",
         "lastError": "status 500"},
        {"name": "undecided", "type": "k8s", "mode": "after", "samples": 0},
    ]  # fmt: skip
    record = run_record(finished_testrun(probes=probes, assertions=[]))
    api, undecided = record.results
    assert (api.passed, api.actual, api.message) == (False, "Failed: 70% of 10 sample(s) passed", "status 500")
    assert (undecided.passed, undecided.actual) == (None, "0 sample(s)")
    assert (api.state, undecided.state) == ("failed", None)


def test_assertion_states_are_kept_and_derived_for_older_runs() -> None:
    assertions = [
        {"name": "up", "type": "availability", "expected": ">= 99", "passed": False, "state": "skipped"},
        {"name": "lat", "type": "latency", "expected": "<= 9", "passed": False, "state": "error"},
        {"name": "old-pass", "type": "recovery_time", "expected": "<= 9", "passed": True},
        {"name": "old-fail", "type": "recovery_time", "expected": "<= 9", "passed": False},
    ]
    record = run_record(finished_testrun(assertions=assertions, probes=[]))
    assert [(r.name, r.state) for r in record.results] == [
        ("up", "skipped"),
        ("lat", "error"),
        ("old-pass", "passed"),
        ("old-fail", "failed"),
    ]


def test_a_run_without_a_phase_is_refused() -> None:
    run = finished_testrun()
    del run["status"]["phase"]
    with pytest.raises(ValueError, match=r"status\.phase is not set"):
        run_record(run)


def test_the_stored_status_leaves_out_the_mirror_bookkeeping() -> None:
    run = finished_testrun()
    before = run_record(run).status
    run["status"]["history"] = {"synced": True, "syncedAt": "2026-03-01T12:00:01Z"}
    assert run_record(run).status == before
    assert "history" not in before


@pytest.mark.parametrize(
    ("status", "needed"),
    [
        ({"phase": "Running"}, False),
        ({"phase": "Passed"}, True),
        ({"phase": "Failed", "history": {"synced": False}}, True),
        ({"phase": "Failed", "history": {"synced": True}}, False),
    ],
)
def test_only_finished_unsynced_runs_need_mirroring(status: dict[str, object], needed: bool) -> None:
    assert needs_mirroring(status) is needed


@pytest.mark.parametrize(
    ("instance", "prefix"),
    [("test-coordinator", "test_coordinator"), ("staging", "staging"), ("9lives", "i9lives")],
)
def test_table_prefix_from_the_instance_name(instance: str, prefix: str) -> None:
    assert table_prefix(instance) == prefix


def test_every_name_fits_postgresql_identifiers() -> None:
    prefix = table_prefix("a" * 40)
    tables = history_tables(prefix)
    names = [*tables.metadata.tables, version_table(prefix)]
    names += [index.name or "" for table in tables.metadata.tables.values() for index in table.indexes]
    assert max(len(name) for name in names) <= 63


def test_urls_are_masked() -> None:
    assert masked("postgresql+asyncpg://app:s3cret@db:5432/history") == "postgresql+asyncpg://app:***@db:5432/history"
    assert masked("redis://:s3cret@cache:6379/0") == "redis://:***@cache:6379/0"


@pytest.mark.parametrize(
    ("text", "window"),
    [
        ("7d", timedelta(days=7)),
        ("2w", timedelta(days=14)),
        ("24h", timedelta(hours=24)),
        ("90m", timedelta(minutes=90)),
    ],
)
def test_since_windows(text: str, window: timedelta) -> None:
    assert parse_since(text) == window


def test_history_times_are_iso_times_or_windows_back_from_now() -> None:
    assert parse_moment("2026-12-06T14:30") == datetime(2026, 12, 6, 14, 30, tzinfo=UTC)
    assert parse_moment("2026-12-06T14:30+01:00") == datetime(2026, 12, 6, 13, 30, tzinfo=UTC)
    before = datetime.now(UTC)
    ago = parse_moment("24h")
    assert before - timedelta(hours=24, seconds=1) <= ago <= datetime.now(UTC) - timedelta(hours=24)
    with pytest.raises(argparse.ArgumentTypeError, match="invalid time 'yesterday': use an ISO time"):
        parse_moment("yesterday")


def test_a_history_cursor_survives_its_text_and_a_forged_one_is_refused() -> None:
    cursor = Cursor(datetime(2026, 12, 1, 10, 0, 0, 123456, tzinfo=UTC), "3f2a-uid", 17)
    assert Cursor.decode(cursor.encode(), "--after") == cursor
    with pytest.raises(BadQuery, match=r"^--after: not a position"):
        Cursor.decode("not-a-cursor", "--after")


def test_a_bad_since_window_names_the_option() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="invalid --since '7 days'"):
        parse_since("7 days")


def test_the_scenario_snapshot_is_read_from_its_json_string() -> None:
    run = finished_testrun()
    run["status"]["scenarioSnapshot"] = '{"type": "network_partition", "steps": [{"name": "a"}, {"name": "b"}]}'
    scenario = run_record(run).scenario
    assert (scenario.type, scenario.steps) == ("network_partition", 2)
