"""One run's report (``coordinator report --run``) from fixed rows, in every format: table, JSON, Markdown, JUnit
XML (checked against the JUnit schema) and HTML."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import xmlschema

from coordinator.history.records import event_records, result_records
from coordinator.history.report import FORMATS
from coordinator.history.run_report import RunReport, render_run, run_report_of
from support.testruns import T0, finished_testrun

JUNIT_XSD = Path(__file__).resolve().parents[1] / "data" / "junit.xsd"
ASSERTIONS = [
    {"name": "fast", "type": "recovery_time", "expected": "<= 10", "actual": "2.5s", "passed": True, "state": "passed"},
    {"name": "up", "type": "availability", "expected": ">= 99", "passed": False, "state": "skipped",
     "message": "probe web-ready never ran (no samples)"},
    {"name": "quick", "type": "latency", "expected": "<= 200", "passed": False, "state": "error",
     "message": "probe api errored in all 3 sample(s): <script>x</script> | piped"},
]  # fmt: skip


def _report(phase: str = "Failed", assertions: list[dict[str, Any]] | None = None) -> RunReport:
    """The rows the store would hand over for one run (the record's columns, events and results)."""
    testrun = finished_testrun(name="kw-1", phase=phase, targets=("web-1", "web-2"), assertions=assertions)
    status = testrun["status"]
    run = {
        "uid": testrun["metadata"]["uid"],
        "namespace": "shop",
        "name": "kw-1",
        "scenario": "shop/kill-web",
        "phase": phase,
        "reason": status["reason"],
        "message": status["message"],
        "completed_at": T0,
        "started_at": T0 - timedelta(seconds=10),
        "duration_seconds": 10.0,
        "recovery_seconds": 2.5,
        "resilience_score": 80,
        "targets": 2,
        "dry_run": False,
        "requested_by": {"username": "alice"},
        "status": status,
    }
    events = [vars(e) for e in event_records(status)]
    results = [vars(r) for r in result_records(status)]
    return run_report_of(run, events, results, generated_at=T0 + timedelta(minutes=1), source="sqlite:///h.db")


REPORT = _report(assertions=ASSERTIONS)


def test_the_table_has_the_run_its_steps_events_and_results() -> None:
    text = render_run(REPORT, "table")
    lines = text.splitlines()
    assert lines[0] == "TestRun shop/kw-1"
    assert "Phase             Failed (AssertionFailed)" in lines
    assert f"Correlation ID    {REPORT.run.uid}" in lines
    assert "Requested by      alice" in lines
    steps = text.split("Steps:\n", 1)[1].splitlines()
    assert steps[1].split()[:3] == ["kill", "Reverted", "2"]
    events = text.split("Chaos events:\n", 1)[1].splitlines()
    assert [line.split()[2] for line in events[1:3]] == ["Pod/shop/web-1", "Pod/shop/web-2"]
    assertions = text.split("Assertions:\n", 1)[1].splitlines()
    assert [line.split()[:3] for line in assertions[1:4]] == [
        ["fast", "recovery_time", "passed"],
        ["up", "availability", "skipped"],
        ["quick", "latency", "error"],
    ]
    probes = text.split("Probes:\n", 1)[1].splitlines()
    assert probes[1].split()[:3] == ["web-ready", "k8s", "passed"]


def test_json_holds_everything_with_the_audit_names() -> None:
    data = json.loads(render_run(REPORT, "json"))
    assert data["kind"] == "RunReport"
    assert (data["run"]["correlationId"], data["run"]["requestedBy"]) == (REPORT.run.uid, {"username": "alice"})
    assert (data["run"]["started_at"], data["run"]["completed_at"]) == ("2026-03-01T11:59:50Z", "2026-03-01T12:00:00Z")
    assert [s["name"] for s in data["steps"]] == ["kill"]
    assert [e["target_name"] for e in data["events"]] == ["web-1", "web-2"]
    assert [(a["name"], a["state"], a["passed"]) for a in data["assertions"]] == [
        ("fast", "passed", True),
        ("up", "skipped", False),
        ("quick", "error", False),
    ]
    assert [p["name"] for p in data["probes"]] == ["web-ready"]


def test_markdown_has_a_section_per_part_and_escapes_pipes() -> None:
    text = render_run(REPORT, "markdown")
    assert [line for line in text.splitlines() if line.startswith("## ")] == [
        "## Steps",
        "## Chaos events",
        "## Assertions",
        "## Probes",
    ]
    assert "\\| piped" in text


@pytest.fixture(scope="module")
def junit_schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(JUNIT_XSD))


def _cases(text: str) -> dict[str, str]:
    root = ET.fromstring(text)  # noqa: S314 - our own output, not untrusted input
    return {
        str(case.get("name")): next((child.tag for child in case if child.tag != "system-out"), "passed")
        for case in root.iter("testcase")
    }


def test_junit_makes_each_assertion_and_probe_a_testcase_by_its_state(junit_schema: xmlschema.XMLSchema) -> None:
    text = render_run(REPORT, "junit")
    junit_schema.validate(text)
    assert _cases(text) == {
        "assertion fast": "passed",
        "assertion up": "skipped",
        "assertion quick": "error",
        "probe web-ready": "passed",
    }
    suite = ET.fromstring(text).find("testsuite")  # noqa: S314 - our own output
    assert suite is not None
    assert (suite.get("tests"), suite.get("errors"), suite.get("skipped")) == ("4", "1", "1")


def test_junit_never_shows_a_failed_run_green(junit_schema: xmlschema.XMLSchema) -> None:
    """A run that failed on something no assertion or probe names (a fault error, a timeout) gets a testcase."""
    text = render_run(_report(phase="TimedOut", assertions=[ASSERTIONS[0]]), "junit")
    junit_schema.validate(text)
    assert _cases(text)["(run)"] == "failure"
    passed = render_run(_report(phase="Passed", assertions=[ASSERTIONS[0]]), "junit")
    assert "(run)" not in _cases(passed)


def test_html_is_self_contained_and_escapes_what_the_run_said() -> None:
    page = render_run(REPORT, "html")
    assert "<script" not in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page
    assert 'id="assertions"' in page
    assert "<link" not in page


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_of_the_history_report_has_a_run_report(fmt: str) -> None:
    assert render_run(REPORT, fmt).strip()


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown report format 'pdf'"):
        render_run(REPORT, "pdf")
