"""The overview, scenario and history pages' pure parts: the start form built from declared parameters and checked
with the operator's rules, the charts' series, the history's filters and keyset cursors, the live list's rows, and
the vendored chart library against its pinned checksums. (The queries run against real SQLite and PostgreSQL in
tests/e2e/test_dashboard_pages.py.)"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from multidict import MultiDict

from coordinator.adapters.kube import ApiError, resource_path
from coordinator.api.models import Parameter
from coordinator.dashboard import history, pages, queries, scenarios
from coordinator.dashboard.rows import active_rows
from coordinator.dashboard.server import static_dir
from coordinator.history.browse import HistoryQuery
from support.fake_kube import FakeKube

REPO = Path(__file__).resolve().parents[2]


def declared() -> list[Parameter]:
    return [
        Parameter(name="replicas", type="integer", default=2, description="How many pods to kill"),
        Parameter(name="ratio", type="number", default="0.5"),
        Parameter(name="hold", type="duration", default="30s"),
        Parameter(name="strict", type="boolean"),
        Parameter(name="label", type="string", default="web"),
    ]


# --- the vendored chart library ---------------------------------------------------------------------------------


def pinned_checksums() -> dict[str, str]:
    script = (REPO / "hack" / "vendor-assets").read_text()
    block = re.search(r'VENDORED_SHA256="\n(.*?)"', script, re.DOTALL)
    assert block, "hack/vendor-assets pins the vendored files' sha256"
    return {name: digest for digest, name in (line.split() for line in block.group(1).strip().splitlines())}


def test_the_vendored_chart_library_matches_its_pinned_checksums() -> None:
    vendor = static_dir() / "vendor"
    pinned = pinned_checksums()
    assert set(pinned) == {"uPlot.iife.min.js", "uPlot.min.css", "uPlot.LICENSE"}
    assert sorted(p.name for p in vendor.iterdir()) == sorted(pinned), "only the pinned files are vendored"
    for name, digest in pinned.items():
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest, f"{name} differs from its pin"
    assert "MIT License" in (vendor / "uPlot.LICENSE").read_text()


def test_the_vendoring_script_pins_an_exact_version_and_its_registry_integrity() -> None:
    script = (REPO / "hack" / "vendor-assets").read_text()
    assert re.search(r"^UPLOT_VERSION=\d+\.\d+\.\d+$", script, re.MULTILINE)
    assert re.search(r"^UPLOT_INTEGRITY=sha512-[A-Za-z0-9+/]{86}==$", script, re.MULTILINE)


# --- the start form ---------------------------------------------------------------------------------------------


def test_the_form_has_one_input_per_parameter_typed_and_filled_with_its_default() -> None:
    fields = {f.name: f for f in scenarios.parameter_fields(declared())}
    assert list(fields) == ["replicas", "ratio", "hold", "strict", "label"]
    assert (fields["replicas"].input, fields["replicas"].step, fields["replicas"].value) == ("number", "1", "2")
    assert (fields["ratio"].input, fields["ratio"].step, fields["ratio"].value) == ("number", "any", "0.5")
    assert (fields["hold"].input, fields["hold"].value) == ("text", "30s")
    assert fields["hold"].placeholder
    assert (fields["strict"].input, fields["strict"].options, fields["strict"].value) == (
        "select",
        ("true", "false"),
        "",
    )
    assert fields["strict"].required
    assert not fields["replicas"].required
    assert fields["replicas"].description == "How many pods to kill"


def test_a_refused_form_keeps_what_was_typed_and_shows_each_message() -> None:
    fields = {
        f.name: f
        for f in scenarios.parameter_fields(declared(), {"replicas": "many"}, {"replicas": "expected an integer"})
    }
    assert fields["replicas"].value == "many"
    assert fields["replicas"].error == "expected an integer"
    assert fields["ratio"].error == ""


def test_good_values_become_the_testrun_parameters() -> None:
    checked = scenarios.check_start(
        declared(), {"replicas": "3", "ratio": "0.25", "hold": "1m", "strict": "true", "label": "api", "csrf": "x"}
    )
    assert checked.valid
    assert checked.parameters == {"replicas": 3, "ratio": "0.25", "hold": "1m", "strict": "true", "label": "api"}


def test_a_blank_field_leaves_the_default_and_a_required_one_is_refused_with_the_operators_message() -> None:
    checked = scenarios.check_start(declared(), {"replicas": "", "strict": ""})
    assert "replicas" not in checked.parameters
    assert checked.errors == {"strict": "required: the parameter has no default and the TestRun sets no value"}


def test_bad_values_are_refused_with_the_operators_messages() -> None:
    checked = scenarios.check_start(declared(), {"replicas": "two", "ratio": "x", "hold": "soon", "strict": "yes"})
    assert not checked.valid
    assert checked.errors["replicas"] == 'expected an integer, got "two"'
    assert checked.errors["ratio"] == 'expected a number, got "x"'
    assert checked.errors["strict"] == 'expected a boolean (true or false), got "yes"'
    assert "soon" in checked.errors["hold"]
    assert checked.submitted["replicas"] == "two"


def test_a_wrong_default_of_the_scenario_is_shown_on_its_field() -> None:
    broken = [Parameter(name="count", type="integer", default="lots")]
    checked = scenarios.check_start(broken, {"count": ""})
    assert checked.errors == {"count": 'parameter count: expected an integer, got "lots"'}


def test_invalid_declarations_are_reported_not_crashed_on() -> None:
    found, problems = scenarios.declared_parameters(
        {"parameters": [{"name": "ok", "type": "integer"}, {"name": "bad name", "type": "integer"}]}
    )
    assert [p.name for p in found] == ["ok"]
    assert len(problems) == 1
    assert problems[0].startswith("spec.parameters[1]:")


def test_the_testrun_is_named_after_its_scenario_by_the_api_server() -> None:
    body = scenarios.testrun_body("shop", "kill-web", {"replicas": 3}, dry_run=True)
    assert body["metadata"] == {"generateName": "kill-web-", "namespace": "shop"}
    assert body["spec"] == {"scenarioRef": {"name": "kill-web"}, "parameters": {"replicas": 3}, "dryRun": True}
    assert body["apiVersion"] == "chaos.coordinator.dev/v1alpha1"
    assert "parameters" not in scenarios.testrun_body("shop", "kill-web", {}, dry_run=False)["spec"]


def test_the_spec_yaml_leaves_out_the_servers_bookkeeping() -> None:
    text = scenarios.spec_yaml(
        {
            "apiVersion": "v",
            "kind": "ChaosScenario",
            "metadata": {"name": "s", "managedFields": [{"manager": "kubectl"}]},
            "spec": {"type": "service_restart"},
            "status": {"x": 1},
        }
    )
    assert "managedFields" not in text
    assert "status" not in text
    assert "type: service_restart" in text


# --- charts -----------------------------------------------------------------------------------------------------


def point(day: int, hour: int, passed: bool, recovery: float | None) -> queries.TrendPoint:
    return queries.TrendPoint(datetime(2026, 12, day, hour, tzinfo=UTC), passed, recovery)


def test_pass_rate_is_per_utc_day() -> None:
    points = [point(1, 1, True, 1.0), point(1, 23, False, None), point(3, 5, True, 2.0)]
    assert queries.daily_pass_rate(points) == [
        queries.DailyRate(date(2026, 12, 1), 2, 1),
        queries.DailyRate(date(2026, 12, 3), 1, 1),
    ]


def test_the_charts_series_are_unix_seconds_and_skip_unmeasured_recoveries() -> None:
    points = [point(1, 1, True, 1.25), point(1, 23, False, None), point(3, 5, True, 2.0)]
    data = queries.chart_data(points)
    assert data["recovery"] == [
        [int(points[0].completed_at.timestamp()), int(points[2].completed_at.timestamp())],
        [1.25, 2.0],
    ]
    assert data["passRate"] == [
        [int(datetime(2026, 12, 1, tzinfo=UTC).timestamp()), int(datetime(2026, 12, 3, tzinfo=UTC).timestamp())],
        [50.0, 100.0],
    ]
    assert queries.chart_data([]) == {"recovery": [[], []], "passRate": [[], []]}


# --- the history's filters and keyset cursors ------------------------------------------------------------------


def test_filters_come_from_the_url_and_go_back_into_it() -> None:
    filters = queries.HistoryFilters.from_query(
        MultiDict(namespace="shop", scenario="shop/kill", phase="Failed", **{"from": "2026-12-01", "to": "2026-12-02"})
    )
    assert filters.since == datetime(2026, 12, 1, tzinfo=UTC)
    assert filters.until == datetime(2026, 12, 3, tzinfo=UTC) - timedelta(microseconds=1), "a date as to: its end"
    assert filters.query() == {
        "namespace": "shop",
        "scenario": "shop/kill",
        "phase": "Failed",
        "from": "2026-12-01T00:00",
        "to": "2026-12-02T23:59",
    }
    assert queries.HistoryFilters.from_query(MultiDict()).query() == {}
    timed = queries.HistoryFilters.from_query(MultiDict(**{"from": "2026-12-01T14:30"}))
    assert timed.since == datetime(2026, 12, 1, 14, 30, tzinfo=UTC)


def test_filters_select_the_runs_as_the_history_command_does() -> None:
    filters = queries.HistoryFilters.from_query(
        MultiDict(namespace="shop", scenario="kill", phase="Failed", **{"from": "2026-12-01", "to": "2026-12-02"})
    )
    assert filters.history_query() == HistoryQuery(
        namespace="shop",
        scenario="kill",
        phase="Failed",
        since=datetime(2026, 12, 1, tzinfo=UTC),
        until=datetime(2026, 12, 3, tzinfo=UTC) - timedelta(microseconds=1),
    )
    assert queries.HistoryFilters.from_query(MultiDict()).history_query() == HistoryQuery(), "no filter: every run"


def test_a_bad_date_names_its_parameter() -> None:
    with pytest.raises(queries.BadFilter, match=r"^to: 'yesterday' is not a date"):
        queries.HistoryFilters.from_query(MultiDict(to="yesterday"))


def test_a_cursor_survives_the_url_and_a_forged_one_is_refused() -> None:
    cursor = queries.Cursor(datetime(2026, 12, 1, 10, 0, 0, 123456, tzinfo=UTC), "3f2a-uid")
    encoded = cursor.encode()
    assert re.fullmatch(r"[A-Za-z0-9_-]+", encoded), "URL-safe without escaping"
    assert queries.Cursor.decode(encoded, "after") == cursor
    with pytest.raises(queries.BadFilter, match=r"^after: "):
        queries.Cursor.decode("not-a-cursor", "after")


def test_page_links_keep_the_filters() -> None:
    filters = queries.HistoryFilters(namespace="shop", phase="Passed")
    assert history.page_link(filters, after="abc") == "/history?namespace=shop&phase=Passed&after=abc"
    assert history.page_link(queries.HistoryFilters()) == "/history"


# --- the live list ----------------------------------------------------------------------------------------------


def a_testrun(name: str, phase: str | None, started: str) -> dict[str, object]:
    return {
        "metadata": {"namespace": "shop", "name": name, "creationTimestamp": started},
        "spec": {"scenarioRef": {"name": "kill-web"}},
        "status": {"phase": phase} if phase else {},
    }


def test_the_live_list_shows_active_runs_newest_first() -> None:
    rows = active_rows(
        [
            a_testrun("old", "Running", "2026-12-01T10:00:00Z"),
            a_testrun("done", "Passed", "2026-12-01T11:00:00Z"),
            a_testrun("new", None, "2026-12-01T12:00:00Z"),
        ]
    )
    assert [(r["name"], r["phase"]) for r in rows] == [("new", "Pending"), ("old", "Running")]
    assert rows[0]["scenarioNamespace"] == "shop"


def test_a_server_sent_event_is_one_json_line() -> None:
    raw = pages.sse("run", {"run": {"name": "a\nb"}, "active": True})
    assert raw.endswith(b"\n\n")
    head, data = raw.decode().strip().split("\n")
    assert head == "event: run"
    assert json.loads(data.removeprefix("data: ")) == {"run": {"name": "a\nb"}, "active": True}


async def test_the_live_list_is_a_snapshot_then_every_change_from_its_version() -> None:
    kube = FakeKube()
    kube.add(resource_path("TestRun", "shop", "old"), a_testrun("old", "Running", "2026-12-01T10:00:00Z"))
    kube.add(resource_path("TestRun", "shop", "done"), a_testrun("done", "Passed", "2026-12-01T09:00:00Z"))
    sent: list[tuple[str, Any]] = []

    async def send(data: bytes) -> None:
        head, body = data.decode().strip().split("\n")
        sent.append((head.removeprefix("event: "), json.loads(body.removeprefix("data: "))))
        if len(sent) == 1:  # the page has its snapshot: a run starts, then ends
            await kube.create(resource_path("TestRun", "shop"), a_testrun("new", None, "2026-12-01T11:00:00Z"))
        elif len(sent) == 2:
            await kube.patch(resource_path("TestRun", "shop", "new", "status"), {"status": {"phase": "Passed"}})
        elif len(sent) == 3:
            raise ConnectionResetError  # the browser left

    with pytest.raises(ConnectionResetError):
        await pages.watch_runs(kube, send)
    kinds = [kind for kind, _ in sent]
    assert kinds == ["snapshot", "run", "run"]
    assert [row["name"] for row in sent[0][1]] == ["old"], "the snapshot holds the active runs only"
    assert (sent[1][1]["run"]["name"], sent[1][1]["active"]) == ("new", True)
    assert (sent[2][1]["run"]["name"], sent[2][1]["active"]) == ("new", False), "a finished run leaves the list"
    assert len(kube.calls_of("watch")) == 1


async def test_a_refused_watch_is_the_api_servers_refusal() -> None:
    kube = FakeKube()
    kube.fail(ApiError(403, "Forbidden", 'User "bob" cannot list resource "testruns"'), verb="get")

    async def send(data: bytes) -> None:
        raise AssertionError("nothing is sent before the list")

    with pytest.raises(ApiError, match="cannot list"):
        await pages.watch_runs(kube, send)
