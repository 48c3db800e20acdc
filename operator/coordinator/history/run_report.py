"""One stored run's full report (``coordinator report --run``): the run, its steps, its chaos events and its probe
and assertion results, in every format the history report has (table, JSON, Markdown, JUnit XML, HTML).

Pure code like ``report.py``, whose formatting helpers it shares (times, seconds, escaping, JUnit test cases, the
page style) so a run reads the same in both: the store reads the rows (``HistoryStore.run_report``), these
functions build and format them, so they are tested from fixed rows.
"""

from __future__ import annotations

import html
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from coordinator.domain.timestamps import format_iso_seconds, parse_iso
from coordinator.history.report import (
    HTML_STYLE,
    RunSummary,
    _jsonable,
    _junit_case,
    _md,
    _one_line,
    _outcome,
    _seconds,
    _SuiteCounts,
    _when,
)

# What the report keeps of each ``status.steps[]`` entry.
STEP_KEYS = ("name", "outcome", "targetCount", "injectedAt", "revertedAt", "recoveryTimeSeconds", "message")
# An assertion's state, or a probe's verdict, as a JUnit phase (report.py's _junit_case).
JUNIT_PHASE = {"passed": "Passed", "failed": "Failed", "skipped": "Skipped", "error": "Error"}


@dataclass(frozen=True)
class RunReport:
    """One stored run and everything the history keeps of it."""

    run: RunSummary
    generated_at: datetime
    started_at: datetime | None = None
    dry_run: bool = False
    resilience_score: int | None = None
    targets: int | None = None
    steps: tuple[dict[str, Any], ...] = ()
    events: tuple[dict[str, Any], ...] = ()  # chaos_events rows, in ledger order
    assertions: tuple[dict[str, Any], ...] = ()  # test_results rows of kind assertion, in the scenario's order
    probes: tuple[dict[str, Any], ...] = ()  # test_results rows of kind probe
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        run = self.run.to_dict() | {
            "started_at": self.started_at,
            "dry_run": self.dry_run,
            "resilience_score": self.resilience_score,
            "targets": self.targets,
        }
        row_keys = ("kind", "name", "type", "state", "passed", "expected", "actual", "message")
        event_keys = ("injection_id", "step", "step_name", "fault", "target_kind", "target_namespace", "target_name",
                      "target_uid", "state", "injected_at", "reverted_at", "recovered_at", "message")  # fmt: skip
        data = {
            "kind": "RunReport",
            "generated_at": self.generated_at,
            "source": self.source,
            "run": run,
            "steps": list(self.steps),
            "events": [{key: event.get(key) for key in event_keys} for event in self.events],
            "assertions": [{key: row.get(key) for key in row_keys} for row in self.assertions],
            "probes": [{key: row.get(key) for key in row_keys} for row in self.probes],
        }
        result: dict[str, Any] = _jsonable(data)  # type: ignore[assignment]
        return result


def run_report_of(
    run: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    results: Sequence[Mapping[str, Any]],
    generated_at: datetime | None = None,
    source: str = "",
) -> RunReport:
    """The report of a stored run from its rows (``HistoryStore.get_run``, ``events`` and ``results``)."""
    status = run.get("status") or {}
    steps = tuple(
        {key: step[key] for key in STEP_KEYS if step.get(key) is not None}
        for step in status.get("steps") or []
        if isinstance(step, Mapping)
    )
    summary = RunSummary(
        namespace=run["namespace"],
        name=run["name"],
        scenario=run["scenario"],
        phase=run["phase"],
        completed_at=run["completed_at"],
        reason=run.get("reason"),
        message=run.get("message"),
        duration_seconds=run.get("duration_seconds"),
        recovery_seconds=run.get("recovery_seconds"),
        uid=run["uid"],
        requested_by=run.get("requested_by"),
        workflow=run.get("workflow"),
        nodes=tuple(run.get("nodes") or ()),
        parent_uid=run.get("parent_uid"),
        parent_name=run.get("parent_name"),
        node=run.get("workflow_node"),
    )
    return RunReport(
        run=summary,
        generated_at=generated_at or datetime.now(UTC),
        started_at=run.get("started_at"),
        dry_run=bool(run.get("dry_run")),
        resilience_score=run.get("resilience_score"),
        targets=run.get("targets"),
        steps=steps,
        events=tuple(dict(e) for e in events),
        assertions=tuple(dict(r) for r in results if r.get("kind") == "assertion"),
        probes=tuple(dict(r) for r in results if r.get("kind") == "probe"),
        source=source,
    )


# --- the parts every format shows ----------------------------------------------------------------------------


def _text(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _at(value: Any) -> str:
    """A time from a row (datetime) or from the status (RFC 3339 text)."""
    if isinstance(value, str) and value:
        value = parse_iso(value)
    return _when(value) if isinstance(value, datetime) else "-"


def _target(event: Mapping[str, Any]) -> str:
    return "/".join(
        str(p) for p in (event.get("target_kind"), event.get("target_namespace"), event.get("target_name")) if p
    )


def _requester(report: RunReport) -> str:
    who = report.run.requested_by
    return str(who.get("username")) if who else "not recorded"


def facts(report: RunReport) -> list[tuple[str, str]]:
    """The run's own figures, as label and value."""
    run = report.run
    rows = [
        ("Phase", _outcome(run)),
        ("Message", _one_line(run.message) or "-"),
        ("Workflow" if run.workflow else "Scenario", run.workflow or run.scenario),
        ("Correlation ID", _text(run.uid)),
        ("Requested by", _requester(report)),
        ("Started", _at(report.started_at)),
        ("Completed", _at(run.completed_at)),
        ("Duration", _seconds(run.duration_seconds)),
        ("Recovery", _seconds(run.recovery_seconds)),
        ("Resilience score", _text(report.resilience_score)),
        ("Targets", _text(report.targets)),
    ]
    if report.dry_run:
        rows.append(("Dry run", "yes: nothing was changed"))
    if run.parent_name:
        rows.append(("Workflow run", f"{run.namespace}/{run.parent_name} (node {_text(run.node)})"))
    return rows


SECTIONS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("steps", "Steps", ("STEP", "OUTCOME", "TARGETS", "INJECTED", "REVERTED", "RECOVERY", "MESSAGE")),
    ("events", "Chaos events", ("STEP", "FAULT", "TARGET", "STATE", "INJECTED", "REVERTED", "MESSAGE")),
    ("assertions", "Assertions", ("ASSERTION", "TYPE", "STATE", "EXPECTED", "ACTUAL", "MESSAGE")),
    ("probes", "Probes", ("PROBE", "TYPE", "STATE", "RESULT", "LAST ERROR")),
)


def section_rows(report: RunReport, section: str) -> list[tuple[str, ...]]:
    """The rows of one section (``SECTIONS``), as text."""
    if section == "steps":
        return [
            (
                _text(step.get("name")),
                _text(step.get("outcome")),
                _text(step.get("targetCount")),
                _at(step.get("injectedAt")),
                _at(step.get("revertedAt")),
                _seconds(step.get("recoveryTimeSeconds")),
                _one_line(step.get("message"), 80) or "-",
            )
            for step in report.steps
        ]
    if section == "events":
        return [
            (
                _text(event.get("step_name") or event.get("step")),
                _text(event.get("fault")),
                _target(event),
                _text(event.get("state")),
                _at(event.get("injected_at")),
                _at(event.get("reverted_at")),
                _one_line(event.get("message"), 80) or "-",
            )
            for event in report.events
        ]
    if section == "assertions":
        return [
            (
                _text(row.get("name")),
                _text(row.get("type")),
                _text(row.get("state")),
                _text(row.get("expected")),
                _text(row.get("actual")),
                _one_line(row.get("message"), 80) or "-",
            )
            for row in report.assertions
        ]
    return [
        (
            _text(row.get("name")),
            _text(row.get("type")),
            _text(row.get("state")),
            _text(row.get("actual")),
            _one_line(row.get("message"), 80) or "-",
        )
        for row in report.probes
    ]


def _title(report: RunReport) -> str:
    return f"TestRun {report.run.namespace}/{report.run.name}"


# --- table, JSON, Markdown -----------------------------------------------------------------------------------


def render_run_table(report: RunReport) -> str:
    lines = [_title(report), ""]
    width = max(len(label) for label, _ in facts(report))
    lines += [f"{label.ljust(width)}  {value}" for label, value in facts(report)]
    for key, title, columns in SECTIONS:
        rows = section_rows(report, key)
        lines += ["", f"{title}:"]
        if not rows:
            lines.append("  none")
            continue
        table = [columns, *rows]
        widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
        lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table]
    return "\n".join(lines) + "\n"


def render_run_json(report: RunReport) -> str:
    return json.dumps(report.to_dict(), indent=2) + "\n"


def render_run_markdown(report: RunReport) -> str:
    lines = [f"# {_md(_title(report))}", "", "| | |", "| --- | --- |"]
    lines += [f"| {label} | {_md(value)} |" for label, value in facts(report)]
    for key, title, columns in SECTIONS:
        lines += ["", f"## {title}", ""]
        rows = section_rows(report, key)
        if not rows:
            lines.append("None.")
            continue
        lines.append("| " + " | ".join(c.title() for c in columns) + " |")
        lines.append("|" + " --- |" * len(columns))
        lines += ["| " + " | ".join(_md(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# --- JUnit XML -----------------------------------------------------------------------------------------------


def render_run_junit(report: RunReport) -> str:
    """One testsuite for the run: a testcase per assertion (its state: a skipped assertion is skipped, an errored
    one an error) and per probe (its verdict; none is skipped); a run that did not pass while none of them failed
    has a testcase of its own, so CI never shows it green."""
    run = report.run
    root = ET.Element("testsuites", name="test-coordinator")
    suite = ET.SubElement(
        root,
        "testsuite",
        name=f"{run.namespace}/{run.name}",
        timestamp=format_iso_seconds(run.completed_at).removesuffix("Z"),
        id="0",
    )
    properties = ET.SubElement(suite, "properties")
    for name, value in (("scenario", run.workflow or run.scenario), ("correlationId", _text(run.uid)),
                        ("phase", _outcome(run)), ("recovery", _seconds(run.recovery_seconds))):  # fmt: skip
        ET.SubElement(properties, "property", name=name, value=value)
    counts = _SuiteCounts()
    classname = (run.workflow or run.scenario).replace("/", ".")
    for kind, rows in (("assertion", report.assertions), ("probe", report.probes)):
        for row in rows:
            phase = JUNIT_PHASE.get(str(row.get("state")), "Skipped")
            detail = f"expected {_text(row.get('expected'))}, got {_text(row.get('actual'))}"
            if row.get("message"):
                detail += f": {row['message']}"
            name = f"{kind} {row.get('name')}"
            reason = _one_line(row.get("message"), 120) or str(row.get("state") or "undecided")
            _junit_case(suite, name, classname, phase, reason, detail, None)
            counts.count(phase, None)
    if run.phase != "Passed" and counts.failures + counts.errors == 0:
        _junit_case(suite, "(run)", classname, run.phase, run.reason, run.message or run.phase, run.duration_seconds)
        counts.count(run.phase, None)
    counts.time = max(run.duration_seconds or 0.0, 0.0)
    counts.write(suite)
    for name in ("tests", "failures", "errors"):
        root.set(name, str(getattr(counts, name)))
    root.set("time", suite.get("time", "0.000"))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# --- HTML ----------------------------------------------------------------------------------------------------


def render_run_html(report: RunReport) -> str:
    """A self-contained page (inline CSS, no scripts), like the history report's."""
    esc = html.escape
    facts_rows = "".join(f"<tr><th>{esc(label)}</th><td>{esc(value)}</td></tr>" for label, value in facts(report))
    sections = []
    for key, title, columns in SECTIONS:
        rows = section_rows(report, key)
        body = (
            "<table><thead><tr>"
            + "".join(f"<th>{esc(c.title())}</th>" for c in columns)
            + "</tr></thead><tbody>"
            + "".join("<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>" for row in rows)
            + "</tbody></table>"
            if rows
            else "<p>None.</p>"
        )
        sections.append(f'<section class="card" id="{key}"><h2>{esc(title)}</h2>{body}</section>')
    title = esc(_title(report))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{HTML_STYLE}</style></head><body>"
        f"<h1>{title}</h1>"
        f'<p class="sub">Generated {esc(_when(report.generated_at))}'
        f"{f' from {esc(report.source)}' if report.source else ''}.</p>"
        f"<table>{facts_rows}</table>{''.join(sections)}</body></html>\n"
    )


RUN_RENDERERS: dict[str, Callable[[RunReport], str]] = {
    "table": render_run_table,
    "json": render_run_json,
    "markdown": render_run_markdown,
    "junit": render_run_junit,
    "html": render_run_html,
}


def render_run(report: RunReport, fmt: str) -> str:
    """Render one run's report in one of report.py's ``FORMATS``."""
    try:
        renderer = RUN_RENDERERS[fmt]
    except KeyError:
        raise ValueError(f"unknown report format {fmt!r}; choose one of {', '.join(RUN_RENDERERS)}") from None
    return renderer(report)
