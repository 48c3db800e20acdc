"""Report renderers from fixed aggregates: table, JSON, Markdown, JUnit XML (checked against the JUnit schema),
and the self-contained HTML page with its trend charts."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
import xmlschema

from coordinator.history.report import (
    FORMATS,
    Report,
    ReportFilters,
    RunSummary,
    ScenarioStats,
    grouped_runs,
    needs_runs,
    render,
    render_html,
    render_json,
    render_junit,
    render_markdown,
    render_table,
    trend_svg,
)
from support.testruns import workflow_run

JUNIT_XSD = Path(__file__).resolve().parents[1] / "data" / "junit.xsd"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _run(name: str, phase: str, minutes: int, recovery: float | None, reason: str | None = None) -> RunSummary:
    return RunSummary(
        namespace="shop",
        name=name,
        scenario="shop/kill-web",
        phase=phase,
        completed_at=T0 + timedelta(minutes=minutes),
        reason=reason,
        message=f"{name} said <script>alert('x')</script> | piped" if phase != "Passed" else "1 step(s) completed",
        duration_seconds=12.5,
        recovery_seconds=recovery,
    )


KILL_RUNS = (
    _run("kw-0", "Passed", 0, 1.0, "Completed"),
    _run("kw-1", "Failed", 1, 2.0, "AssertionFailed"),
    _run("kw-2", "Passed", 2, 3.0, "Completed"),
    _run("kw-3", "TimedOut", 3, None, "TimedOut"),
    _run("kw-4", "Error", 4, 10.0, "FaultError"),
    _run("kw-5", "Cancelled", 5, None, "Aborted"),
)
DRAIN_RUNS = tuple(
    RunSummary("shop", f"dr-{i}", "shop/drain", "Passed", T0 + timedelta(minutes=i), "Completed", None, 3.0, None)
    for i in range(2)
)
KILL = ScenarioStats(
    scenario="shop/kill-web",
    type="service_restart",
    runs=6,
    passed=2,
    first_run_at=KILL_RUNS[0].completed_at,
    last_run_at=KILL_RUNS[-1].completed_at,
    mean_recovery=4.0,
    p95_recovery=10.0,
    last_failures=(KILL_RUNS[5], KILL_RUNS[4], KILL_RUNS[3]),
    trend=KILL_RUNS,
    mean_duration=12.5,
    timed=5,  # one run recorded no duration
)
DRAIN = ScenarioStats(
    scenario="shop/drain",
    runs=2,
    passed=2,
    first_run_at=DRAIN_RUNS[0].completed_at,
    last_run_at=DRAIN_RUNS[1].completed_at,
    trend=DRAIN_RUNS,
    mean_duration=3.0,
    timed=2,
)
REPORT = Report(
    generated_at=T0 + timedelta(hours=1),
    filters=ReportFilters(namespace="shop", since=T0 - timedelta(days=7)),
    scenarios=(DRAIN, KILL),
    runs=DRAIN_RUNS + KILL_RUNS,
    source="postgresql+asyncpg://coordinator:***@db:5432/history",
)
EMPTY = Report(generated_at=T0, filters=ReportFilters(), scenarios=())


# --- aggregates ----------------------------------------------------------------------------------------------


def test_pass_rate_failed_and_flaky_follow_from_the_counts() -> None:
    assert (KILL.pass_rate, KILL.failed, KILL.flaky) == (pytest.approx(100 * 2 / 6), 4, True)
    assert (DRAIN.pass_rate, DRAIN.failed, DRAIN.flaky) == (100.0, 0, False)


def test_filters_describe_themselves() -> None:
    assert REPORT.filters.describe() == "namespace shop, since 2026-02-22 12:00:00Z"
    assert ReportFilters().describe() == "all runs"


# --- table ---------------------------------------------------------------------------------------------------


def test_table_has_one_row_per_scenario_with_its_numbers() -> None:
    lines = render_table(REPORT).splitlines()
    row = next(line for line in lines if line.startswith("shop/kill-web"))
    assert row.split() == [
        "shop/kill-web", "6", "2", "0", "33.3%", "12.50s", "4.00s", "10.00s", "yes", "2026-03-01", "12:05:00Z"
    ]  # fmt: skip


def test_table_headline_counts_everything() -> None:
    assert render_table(REPORT).splitlines()[0] == (
        "8 run(s) of 2 scenario(s), 4 passed (50.0%), mean duration 9.79s; namespace shop, since 2026-02-22 12:00:00Z"
    )


def test_the_mean_duration_overall_weighs_each_scenario_by_its_timed_runs() -> None:
    assert REPORT.mean_duration == round((12.5 * 5 + 3.0 * 2) / 7, 3)
    untimed = replace(REPORT, scenarios=(replace(DRAIN, mean_duration=None, timed=0),))
    assert untimed.mean_duration is None
    assert "mean duration" not in render_table(untimed).splitlines()[0], "nothing timed: no figure, not 0s"


def test_table_lists_last_failures_newest_first() -> None:
    text = render_table(REPORT)
    failures = text.split("Last failures:\n", 1)[1].splitlines()
    assert [line.split()[2] for line in failures] == ["shop/kw-5", "shop/kw-4", "shop/kw-3"]


def test_table_of_nothing_says_so() -> None:
    assert "no runs in the history match" in render_table(EMPTY)


def test_cancelled_runs_are_shown_but_left_out_of_the_pass_rate() -> None:
    # An abort says nothing about the system: 2 passed of 3 decided runs is 66.7 %, whatever was aborted.
    kill = next(s for s in REPORT.scenarios if s.scenario == "shop/kill-web")
    aborted = replace(kill, runs=9, passed=2, cancelled=3)
    assert (aborted.decided, aborted.failed, round(aborted.pass_rate, 1)) == (6, 4, 33.3)
    report = replace(REPORT, scenarios=(aborted,))
    row = next(line for line in render_table(report).splitlines() if line.startswith("shop/kill-web"))
    assert row.split()[1:5] == ["9", "2", "3", "33.3%"]
    assert "3 cancelled (not in the rate)" in render_table(report).splitlines()[0]
    assert "2 passed (33.3%)" in render_table(report).splitlines()[0]


# --- JSON ----------------------------------------------------------------------------------------------------


def test_json_carries_derived_numbers_and_totals() -> None:
    data = json.loads(render_json(REPORT))
    kill = next(s for s in data["scenarios"] if s["scenario"] == "shop/kill-web")
    assert (kill["passRate"], kill["failed"], kill["flaky"]) == (33.33, 4, True)
    assert data["totals"] == {"runs": 8, "passed": 4, "cancelled": 0, "scenarios": 2, "meanDuration": 9.786}
    assert (kill["mean_duration"], kill["timed"]) == (12.5, 5)
    assert kill["last_run_at"] == "2026-03-01T12:05:00Z"


def test_json_round_trips_through_the_cache_format() -> None:
    assert Report.from_dict(json.loads(render_json(REPORT))) == REPORT


def test_json_names_each_run_by_its_correlation_id_and_requester() -> None:
    alice = {"username": "alice", "groups": ["team-a"]}
    audited = replace(KILL_RUNS[1], uid="0b6f1f8e-5c1a-4d1e-9a53-2f3c7f1b9e10", requested_by=alice)
    stats = replace(KILL, last_failures=(audited,), trend=(KILL_RUNS[0], audited))
    report = replace(REPORT, scenarios=(stats,), runs=(KILL_RUNS[0], audited))
    data = json.loads(render_json(report))
    for listed in (data["runs"][1], data["scenarios"][0]["last_failures"][0], data["scenarios"][0]["trend"][1]):
        assert listed["correlationId"] == "0b6f1f8e-5c1a-4d1e-9a53-2f3c7f1b9e10"
        assert listed["requestedBy"] == alice
        assert "uid" not in listed
        assert "requested_by" not in listed
    assert (data["runs"][0]["correlationId"], data["runs"][0]["requestedBy"]) == (None, None)
    assert Report.from_dict(data) == report, "the cache keeps them"
    assert needs_runs("json"), "the JSON report is the audit trail: every run, not only the aggregates"
    assert needs_runs("junit")
    assert not needs_runs("html")


# --- Markdown ------------------------------------------------------------------------------------------------


def test_markdown_table_has_a_row_per_scenario() -> None:
    rows = [line for line in render_markdown(REPORT).splitlines() if line.startswith("| shop/")]
    assert [row.split("|")[1].strip() for row in rows] == ["shop/drain", "shop/kill-web"]


def test_markdown_escapes_pipes_in_messages() -> None:
    failures = render_markdown(REPORT).split("## Last failures", 1)[1]
    assert "\\| piped" in failures
    assert " | piped" not in failures


# --- JUnit ---------------------------------------------------------------------------------------------------


def _junit(report: Report) -> ET.Element:
    return ET.fromstring(render_junit(report))  # noqa: S314 - our own output, not untrusted input


@pytest.fixture(scope="module")
def junit_schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(JUNIT_XSD))


def test_junit_validates_against_the_schema(junit_schema: xmlschema.XMLSchema) -> None:
    junit_schema.validate(render_junit(REPORT))


def test_junit_of_nothing_validates(junit_schema: xmlschema.XMLSchema) -> None:
    junit_schema.validate(render_junit(EMPTY))


def test_the_schema_rejects_a_malformed_report(junit_schema: xmlschema.XMLSchema) -> None:
    broken = render_junit(REPORT).replace('tests="6"', 'tests="six"', 1)
    assert not junit_schema.is_valid(broken)


def test_junit_has_one_testcase_per_run() -> None:
    root = _junit(REPORT)
    names = [case.get("name") for case in root.iter("testcase")]
    assert sorted(names) == sorted(f"shop/{r.name}" for r in REPORT.runs)


def test_junit_maps_phases_to_failure_error_and_skipped() -> None:
    root = _junit(REPORT)
    kinds = {}
    for case in root.iter("testcase"):
        children = [child.tag for child in case if child.tag != "system-out"]
        kinds[case.get("name")] = children
    assert kinds["shop/kw-0"] == []
    assert kinds["shop/kw-1"] == ["failure"]
    assert kinds["shop/kw-3"] == ["failure"]
    assert kinds["shop/kw-4"] == ["error"]
    assert kinds["shop/kw-5"] == ["skipped"]


def test_junit_failures_carry_the_reason_and_message() -> None:
    root = _junit(REPORT)
    case = next(c for c in root.iter("testcase") if c.get("name") == "shop/kw-1")
    failure = case.find("failure")
    assert failure is not None
    assert (failure.get("message"), failure.get("type")) == ("AssertionFailed", "Failed")
    assert failure.text == "kw-1 said <script>alert('x')</script> | piped"


def test_junit_suite_counts_match_its_cases() -> None:
    root = _junit(REPORT)
    suite = next(s for s in root.iter("testsuite") if s.get("name") == "shop/kill-web")
    counts = {key: suite.get(key) for key in ("tests", "failures", "errors", "skipped", "time")}
    assert counts == {"tests": "6", "failures": "2", "errors": "1", "skipped": "1", "time": "75.000"}
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("8", "2", "1")


# --- HTML ----------------------------------------------------------------------------------------------------


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _tags(page: str) -> list[tuple[str, dict[str, str | None]]]:
    collector = _Collector()
    collector.feed(page)
    return collector.tags


def test_html_has_a_trend_chart_per_scenario() -> None:
    charts = [attrs for tag, attrs in _tags(render_html(REPORT)) if tag == "svg"]
    assert [c["class"] for c in charts] == ["trend", "trend"]


def test_html_chart_draws_every_run_and_a_line_through_the_measured_ones() -> None:
    tags = _tags(trend_svg(KILL))
    circles = [attrs for tag, attrs in tags if tag == "circle"]
    (line,) = [attrs for tag, attrs in tags if tag == "polyline"]
    assert len(circles) == len(KILL_RUNS)
    assert len((line["points"] or "").split()) == sum(1 for r in KILL_RUNS if r.recovery_seconds is not None)


def test_html_chart_puts_slower_recoveries_higher() -> None:
    tags = _tags(trend_svg(KILL))
    (line,) = [attrs for tag, attrs in tags if tag == "polyline"]
    ys = [float(point.split(",")[1]) for point in (line["points"] or "").split()]
    measured = [r.recovery_seconds for r in KILL_RUNS if r.recovery_seconds is not None]
    assert [y for _, y in sorted(zip(measured, ys, strict=True))] == sorted(ys, reverse=True)


def test_html_chart_marks_verdicts() -> None:
    classes = [attrs["class"] for tag, attrs in _tags(trend_svg(KILL)) if tag == "circle"]
    assert classes == ["run passed", "run failed", "run passed", "run failed", "run failed", "run failed"]


def test_html_chart_without_measurements_says_so() -> None:
    assert "no recovery time measured" in trend_svg(DRAIN)


def test_html_is_self_contained() -> None:
    page = render_html(REPORT)
    assert not any(tag in ("script", "link", "img", "iframe") for tag, _ in _tags(page))
    references = re.findall(r'(?:href|src)="([^"]*)"', page)
    assert all(ref.startswith("#") for ref in references)


def test_html_escapes_what_runs_said() -> None:
    page = render_html(REPORT)
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert" in page


# --- dispatch ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_renders(fmt: str) -> None:
    assert render(REPORT, fmt).endswith("\n")


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown report format 'pdf'"):
        render(REPORT, "pdf")


# --- workflow runs -------------------------------------------------------------------------------------------

GAME_DAY_NODES = tuple(workflow_run(name="gd-1")["status"]["nodes"])
PARENT = RunSummary(
    "shop",
    "gd-1",
    "shop/game-day",
    "Failed",
    T0 + timedelta(minutes=30),
    "NodeFailed",
    "node kill-db Failed",
    60.0,
    2.0,
    uid="gd-1-uid",
    workflow="shop/game-day",
    nodes=GAME_DAY_NODES,
)


def _child(node: str, phase: str, minutes: int, parent_uid: str = "gd-1-uid") -> RunSummary:
    return RunSummary(
        "shop",
        f"gd-1-{node}",
        f"shop/{node}",
        phase,
        T0 + timedelta(minutes=minutes),
        "Completed" if phase == "Passed" else "AssertionFailed",
        "the child's own message",
        20.0,
        2.0,
        uid=f"{node}-uid",
        parent_uid=parent_uid,
        parent_name="gd-1",
        node=node,
    )


# In completion order, which is not the workflow's node order.
KILL_DB, KILL_CACHE = _child("kill-db", "Failed", 28), _child("kill-cache", "Passed", 29)
ORPHAN = _child("kill-cache", "Passed", 31, parent_uid="older-uid")  # its workflow run is outside the window
GAME_DAY = ScenarioStats(
    scenario="shop/game-day",
    workflow=True,
    runs=1,
    passed=0,
    first_run_at=PARENT.completed_at,
    last_run_at=PARENT.completed_at,
    mean_recovery=2.0,
    p95_recovery=2.0,
    last_failures=(PARENT,),
    trend=(PARENT,),
)
WORKFLOW_REPORT = replace(
    REPORT, scenarios=(DRAIN, GAME_DAY, KILL), runs=(*DRAIN_RUNS, KILL_DB, KILL_CACHE, PARENT, ORPHAN, *KILL_RUNS)
)


def test_a_workflow_run_is_grouped_with_its_children_in_node_order() -> None:
    groups = grouped_runs(WORKFLOW_REPORT.runs)
    assert [(g.run.name, [c.node for c in g.children]) for g in groups if g.children] == [
        ("gd-1", ["kill-cache", "kill-db"])
    ]
    alone = [g.run.name for g in groups if not g.children]
    assert "gd-1-kill-db" not in alone
    assert alone.count("gd-1-kill-cache") == 1  # the orphan, from another workflow run
    assert len(groups) == len(WORKFLOW_REPORT.runs) - 2


def test_a_child_is_grouped_by_its_parent_name_without_an_owner_uid() -> None:
    child = replace(KILL_DB, parent_uid=None)
    (group,) = grouped_runs([PARENT, child])
    assert group.children == (child,)


def test_junit_makes_a_workflow_run_one_testsuite_with_a_testcase_per_node(
    junit_schema: xmlschema.XMLSchema,
) -> None:
    text = render_junit(WORKFLOW_REPORT)
    junit_schema.validate(text)
    root = ET.fromstring(text)  # noqa: S314 - our own output, not untrusted input
    suite = next(s for s in root.iter("testsuite") if s.get("name") == "shop/gd-1")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["kill-cache", "approve", "kill-db", "report"]
    assert {c.get("classname") for c in cases} == {"shop.game-day"}
    verdicts = {c.get("name"): [e.tag for e in c if e.tag != "system-out"] for c in cases}
    assert verdicts == {"kill-cache": [], "approve": [], "kill-db": ["failure"], "report": ["skipped"]}
    failure = cases[2].find("failure")
    assert failure is not None
    assert (failure.get("message"), failure.text) == ("AssertionFailed", "assertion fast failed: recovery 12s > 10s")
    counts = {key: suite.get(key) for key in ("tests", "failures", "errors", "skipped", "time")}
    assert counts == {"tests": "4", "failures": "1", "errors": "0", "skipped": "1", "time": "50.000"}
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties["workflow"] == "shop/game-day"
    assert "gd-1-kill-db" in (cases[2].findtext("system-out") or "")


def test_junit_lists_children_only_under_their_workflow_run() -> None:
    root = _junit(WORKFLOW_REPORT)
    names = [c.get("name") for c in root.iter("testcase")]
    assert "shop/gd-1-kill-db" not in names
    assert names.count("shop/gd-1-kill-cache") == 1  # the orphan, as a run of its scenario
    assert "shop/game-day" not in {s.get("name") for s in root.iter("testsuite")}
    plain = _junit(REPORT)
    kill = next(s for s in root.iter("testsuite") if s.get("name") == "shop/kill-web")
    before = next(s for s in plain.iter("testsuite") if s.get("name") == "shop/kill-web")
    # A plain scenario's suite keeps its shape (only its position among the suites may differ).
    assert {**kill.attrib, "id": ""} == {**before.attrib, "id": ""}
    assert [ET.tostring(c) for c in kill] == [ET.tostring(c) for c in before]
    assert root.get("tests") == str(int(plain.get("tests") or 0) + 1 + 4)


def test_junit_gives_a_workflow_that_failed_on_its_own_a_testcase() -> None:
    """Every node passed, but the workflow's steady state did not hold: CI must see a failure."""
    passed = tuple({**node, "phase": "Passed"} for node in GAME_DAY_NODES)
    run = replace(PARENT, nodes=passed, reason="SteadyStateFailed", message="web-ready failed after the last node")
    root = _junit(replace(REPORT, scenarios=(), runs=(run,)))
    cases = list(root.iter("testcase"))
    assert [c.get("name") for c in cases] == ["kill-cache", "approve", "kill-db", "report", "(workflow)"]
    failure = cases[-1].find("failure")
    assert failure is not None
    assert (failure.get("message"), failure.text) == ("SteadyStateFailed", "web-ready failed after the last node")


def test_json_lists_each_workflow_run_before_its_children() -> None:
    data = json.loads(render_json(WORKFLOW_REPORT))
    names = [run["name"] for run in data["runs"]]
    at = names.index("gd-1")
    assert names[at : at + 3] == ["gd-1", "gd-1-kill-cache", "gd-1-kill-db"]
    parent, child = data["runs"][at], data["runs"][at + 2]
    assert (parent["workflow"], [n["name"] for n in parent["nodes"]]) == (
        "shop/game-day",
        ["kill-cache", "approve", "kill-db", "report"],
    )
    assert (child["workflowRun"], child["workflowRunId"], child["node"]) == ("gd-1", "gd-1-uid", "kill-db")
    (stats,) = [s for s in data["scenarios"] if s["workflow"]]
    assert stats["scenario"] == "shop/game-day"


def test_a_workflow_report_round_trips_through_the_cache_format() -> None:
    again = Report.from_dict(json.loads(render_json(WORKFLOW_REPORT)))
    assert sorted(again.runs, key=lambda r: r.name) == sorted(WORKFLOW_REPORT.runs, key=lambda r: r.name)
    assert again.scenarios == WORKFLOW_REPORT.scenarios


def test_table_lists_a_workflows_latest_runs_node_by_node() -> None:
    text = render_table(WORKFLOW_REPORT)
    assert "shop/game-day (workflow)" in text
    section = text[text.index("Workflow shop/game-day, latest runs:") :].splitlines()
    assert "shop/gd-1" in section[1]
    assert "Failed (NodeFailed)" in section[1]
    assert [line.split()[0] for line in section[2:6]] == ["kill-cache", "approve", "kill-db", "report"]
    assert "shop/gd-1-kill-db" in section[4]
    assert "assertion fast failed" in section[4]


def test_markdown_and_html_list_a_workflows_nodes_in_order() -> None:
    markdown = render_markdown(WORKFLOW_REPORT)
    section = markdown[markdown.index("## Workflow runs") :]
    assert [section.index(f"  - {name}:") for name in ("kill-cache", "approve", "kill-db", "report")] == sorted(
        section.index(f"  - {name}:") for name in ("kill-cache", "approve", "kill-db", "report")
    )
    page = render_html(WORKFLOW_REPORT)
    assert 'id="s-shop-game-day--workflow-"' in page
    nodes = page[page.index('<ol class="nodes">') :]
    assert [nodes.index(f"<li>{name}:") for name in ("kill-cache", "approve", "kill-db")] == sorted(
        nodes.index(f"<li>{name}:") for name in ("kill-cache", "approve", "kill-db")
    )


def test_every_format_shows_the_mean_duration_beside_the_recovery() -> None:
    markdown = render_markdown(REPORT).splitlines()
    header = next(line for line in markdown if line.startswith("| Scenario"))
    kill = next(line for line in markdown if line.startswith("| shop/kill-web"))
    assert [c.strip() for c in header.split("|")][5:8] == ["Pass Rate", "Mean Duration", "Mean Recovery"]
    assert [c.strip() for c in kill.split("|")][5:8] == ["33.3%", "12.50s", "4.00s"]
    assert "mean duration 9.79s" in markdown[2]
    suite = next(s for s in _junit(REPORT) if s.get("name") == "shop/kill-web")
    assert {p.get("name"): p.get("value") for p in suite.iter("property")}["meanDuration"] == "12.50s"
    page = render_html(REPORT)
    assert "<span>mean duration 12.50s</span>" in page
    assert '<td class="num">12.50s</td><td class="num">4.00s</td>' in page
