"""Report aggregates and their renderers: table, JSON, Markdown, JUnit XML and HTML.

Pure code: the store computes a ``Report`` (see ``HistoryStore.report``), these functions only format it, so
they are tested from fixed aggregates. The HTML page is self-contained (inline CSS and SVG, no scripts, no
external assets) so it can be archived by CI or mailed as one file.
"""

from __future__ import annotations

import html
import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from coordinator.domain.timestamps import format_iso_seconds, parse_iso

FORMATS = ("table", "json", "markdown", "junit", "html")
TREND_POINTS = 50  # runs per scenario in the trend chart
LAST_FAILURES = 3  # failures listed per scenario
WORKFLOW_RUNS_SHOWN = 3  # latest runs listed with their nodes per workflow (table, Markdown, HTML)

# --- the aggregates ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportFilters:
    """Which runs a report covers. ``scenario`` is ``name`` (any namespace) or ``namespace/name``."""

    namespace: str | None = None
    scenario: str | None = None
    since: datetime | None = None

    def describe(self) -> str:
        parts = []
        if self.namespace:
            parts.append(f"namespace {self.namespace}")
        if self.scenario:
            parts.append(f"scenario {self.scenario}")
        if self.since:
            parts.append(f"since {_when(self.since)}")
        return ", ".join(parts) or "all runs"

    def cache_key(self) -> str:
        return json.dumps([self.namespace, self.scenario, self.since.isoformat() if self.since else None])


@dataclass(frozen=True)
class RunSummary:
    """One run as the report shows it."""

    namespace: str
    name: str
    scenario: str  # namespace/name
    phase: str
    completed_at: datetime
    reason: str | None = None
    message: str | None = None
    duration_seconds: float | None = None
    recovery_seconds: float | None = None
    uid: str | None = None  # the run's UID: its correlation ID in logs, Events and probe requests
    requested_by: dict[str, Any] | None = None  # status.requestedBy (username, uid, groups), when recorded
    # A workflow run: its ChaosWorkflow (namespace/name; ``scenario`` names it too) and its nodes in order, each
    # as status.nodes had it (name, phase, testRun, reason, message, ...).
    workflow: str | None = None
    nodes: tuple[dict[str, Any], ...] = ()
    # A child of a workflow run: the parent TestRun (uid, name) and the node it ran.
    parent_uid: str | None = None
    parent_name: str | None = None
    node: str | None = None

    @property
    def passed(self) -> bool:
        return self.phase == "Passed"

    def to_dict(self) -> dict[str, Any]:
        """As the JSON report lists a run: the audit fields under the names the TestRun uses (``correlationId``
        is the UID, ``requestedBy`` as in ``status.requestedBy``), a child's parent as ``workflowRun`` (its name,
        the workflow-run label's value) and ``workflowRunId`` (its UID)."""
        data = asdict(self)
        data["correlationId"] = data.pop("uid")
        data["requestedBy"] = data.pop("requested_by")
        data["workflowRun"] = data.pop("parent_name")
        data["workflowRunId"] = data.pop("parent_uid")
        return data

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunSummary:
        """The inverse of ``to_dict``."""
        renamed = ("correlationId", "requestedBy", "workflowRun", "workflowRunId", "nodes")
        fields = {k: v for k, v in raw.items() if k not in renamed}
        return cls(
            **{**fields, "completed_at": parse_iso(raw["completed_at"])},
            uid=raw.get("correlationId"),
            requested_by=raw.get("requestedBy"),
            parent_name=raw.get("workflowRun"),
            parent_uid=raw.get("workflowRunId"),
            nodes=tuple(raw.get("nodes") or ()),
        )


@dataclass(frozen=True)
class RunGroup:
    """A run as the report lists it: a workflow run with its children, or a run on its own."""

    run: RunSummary
    children: tuple[RunSummary, ...] = ()


def grouped_runs(runs: Sequence[RunSummary]) -> list[RunGroup]:
    """``runs`` in their order, each workflow run with its children (in the workflow's node order) and without
    them on their own; a child whose workflow run is not among ``runs`` (outside the window) stands alone."""
    parents = {run.uid: run for run in runs if run.workflow is not None and run.uid}
    by_name = {(run.namespace, run.name): run.uid for run in parents.values()}
    children: dict[str | None, list[RunSummary]] = {}
    for run in runs:
        parent = run.parent_uid if run.parent_uid is not None else by_name.get((run.namespace, run.parent_name or ""))
        if parent in parents and run.uid not in parents:
            children.setdefault(parent, []).append(run)
    grouped = {id(child) for group in children.values() for child in group}
    groups = []
    for run in runs:
        if id(run) in grouped:
            continue
        order = {node.get("name"): index for index, node in enumerate(run.nodes)}
        mine = sorted(
            children.get(run.uid, []) if run.workflow is not None else [],
            key=lambda child: (order.get(child.node, len(order)), child.node or "", child.completed_at),
        )
        groups.append(RunGroup(run, tuple(mine)))
    return groups


@dataclass(frozen=True)
class ScenarioStats:
    """A scenario's runs in the report's window."""

    scenario: str  # namespace/name
    runs: int  # every finished run in the window, Cancelled ones included
    passed: int
    first_run_at: datetime
    last_run_at: datetime
    type: str | None = None
    mean_recovery: float | None = None
    p95_recovery: float | None = None
    last_failures: tuple[RunSummary, ...] = ()  # newest first
    trend: tuple[RunSummary, ...] = ()  # the latest runs, oldest first
    cancelled: int = 0  # aborted runs: shown, but left out of the pass rate
    workflow: bool = False  # a ChaosWorkflow's runs (``scenario`` is the workflow's namespace/name)
    mean_duration: float | None = None  # seconds from start to completion, over the runs that recorded it
    timed: int = 0  # the runs that recorded a duration (the weight of ``mean_duration`` in the overall mean)

    @property
    def decided(self) -> int:
        """Runs with a verdict about the system: every run but the Cancelled ones."""
        return self.runs - self.cancelled

    @property
    def failed(self) -> int:
        return self.decided - self.passed

    @property
    def pass_rate(self) -> float:
        return 100.0 * self.passed / self.decided if self.decided else 0.0

    @property
    def flaky(self) -> bool:
        """Mixed verdicts: the same scenario both passed and failed in the window."""
        return self.passed > 0 and self.failed > 0


@dataclass(frozen=True)
class Report:
    generated_at: datetime
    filters: ReportFilters
    scenarios: tuple[ScenarioStats, ...]
    runs: tuple[RunSummary, ...] = field(default=())  # every run in the window, when asked for (JUnit)
    source: str = ""  # where the data came from (a masked database URL)

    @property
    def total_runs(self) -> int:
        return sum(s.runs for s in self.scenarios)

    @property
    def total_cancelled(self) -> int:
        return sum(s.cancelled for s in self.scenarios)

    @property
    def total_passed(self) -> int:
        return sum(s.passed for s in self.scenarios)

    @property
    def mean_duration(self) -> float | None:
        """The mean duration of every timed run in the report (each scenario's mean weighted by its timed runs)."""
        timed = sum(s.timed for s in self.scenarios if s.mean_duration is not None)
        if not timed:
            return None
        return round(sum(s.mean_duration * s.timed for s in self.scenarios if s.mean_duration is not None) / timed, 3)

    @property
    def failures(self) -> list[RunSummary]:
        """The last failures of every scenario, newest first."""
        return sorted((f for s in self.scenarios for f in s.last_failures), key=lambda r: r.completed_at, reverse=True)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for stats, raw in zip(self.scenarios, data["scenarios"], strict=True):
            raw.update(
                failed=stats.failed, cancelled=stats.cancelled, passRate=round(stats.pass_rate, 2), flaky=stats.flaky
            )
            raw["last_failures"] = [run.to_dict() for run in stats.last_failures]
            raw["trend"] = [run.to_dict() for run in stats.trend]
        # A workflow run's children follow it, in its node order.
        data["runs"] = [run.to_dict() for group in grouped_runs(self.runs) for run in (group.run, *group.children)]
        data["totals"] = {
            "runs": self.total_runs,
            "passed": self.total_passed,
            "cancelled": self.total_cancelled,
            "scenarios": len(self.scenarios),
            "meanDuration": self.mean_duration,
        }
        result: dict[str, Any] = _jsonable(data)  # type: ignore[assignment]
        return result

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        """The inverse of ``to_dict`` (the report cache stores reports as JSON)."""

        run = RunSummary.from_dict

        scenarios = tuple(
            ScenarioStats(
                scenario=raw["scenario"],
                runs=raw["runs"],
                passed=raw["passed"],
                first_run_at=parse_iso(raw["first_run_at"]),
                last_run_at=parse_iso(raw["last_run_at"]),
                type=raw.get("type"),
                mean_recovery=raw.get("mean_recovery"),
                p95_recovery=raw.get("p95_recovery"),
                last_failures=tuple(run(r) for r in raw.get("last_failures", [])),
                trend=tuple(run(r) for r in raw.get("trend", [])),
                cancelled=raw.get("cancelled", 0),
                workflow=raw.get("workflow", False),
                mean_duration=raw.get("mean_duration"),
                timed=raw.get("timed", 0),
            )
            for raw in data["scenarios"]
        )
        since = data["filters"].get("since")
        filters = ReportFilters(
            namespace=data["filters"].get("namespace"),
            scenario=data["filters"].get("scenario"),
            since=parse_iso(since) if since else None,
        )
        return cls(
            generated_at=parse_iso(data["generated_at"]),
            filters=filters,
            scenarios=scenarios,
            runs=tuple(run(r) for r in data.get("runs", [])),
            source=data.get("source", ""),
        )


def _jsonable(value: object) -> object:
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def _percent(value: float) -> str:
    return f"{value:.1f}%"


def _outcome(run: RunSummary) -> str:
    return f"{run.phase} ({run.reason})" if run.reason else run.phase


def _one_line(text: str | None, limit: int = 160) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# --- table ---------------------------------------------------------------------------------------------------

TABLE_COLUMNS = (
    "SCENARIO",
    "RUNS",
    "PASSED",
    "CANCELLED",
    "PASS RATE",
    "MEAN DURATION",
    "MEAN RECOVERY",
    "P95 RECOVERY",
    "FLAKY",
    "LAST RUN",
)


def _label(stats: ScenarioStats) -> str:
    return f"{stats.scenario} (workflow)" if stats.workflow else stats.scenario


def _rows(report: Report) -> list[tuple[str, ...]]:
    return [
        (
            _label(s),
            str(s.runs),
            str(s.passed),
            str(s.cancelled),
            _percent(s.pass_rate),
            _seconds(s.mean_duration),
            _seconds(s.mean_recovery),
            _seconds(s.p95_recovery),
            "yes" if s.flaky else "no",
            _when(s.last_run_at),
        )
        for s in report.scenarios
    ]


@dataclass(frozen=True)
class NodeLine:
    """One node of a workflow run as the reports list it under the run."""

    name: str
    phase: str
    reason: str | None
    test_run: str | None  # namespace/name of the child run, when the node had one
    message: str | None

    @property
    def outcome(self) -> str:
        return f"{self.phase} ({self.reason})" if self.reason else self.phase


def node_lines(run: RunSummary) -> list[NodeLine]:
    """A workflow run's nodes, in the workflow's order."""
    return [
        NodeLine(
            name=str(node.get("name")),
            phase=str(node.get("phase") or "Pending"),
            reason=node.get("reason"),
            test_run=f"{run.namespace}/{node['testRun']}" if node.get("testRun") else None,
            message=node.get("message"),
        )
        for node in run.nodes
    ]


def latest_workflow_runs(report: Report) -> list[tuple[ScenarioStats, list[RunSummary]]]:
    """Per workflow, its latest runs (newest first), which the reports list with their nodes."""
    return [
        (s, sorted(s.trend, key=lambda r: r.completed_at, reverse=True)[:WORKFLOW_RUNS_SHOWN])
        for s in report.scenarios
        if s.workflow
    ]


def _headline(report: Report) -> str:
    decided = report.total_runs - report.total_cancelled
    rate = 100.0 * report.total_passed / decided if decided else 0.0
    cancelled = f", {report.total_cancelled} cancelled (not in the rate)" if report.total_cancelled else ""
    duration = f", mean duration {_seconds(report.mean_duration)}" if report.mean_duration is not None else ""
    return (
        f"{report.total_runs} run(s) of {len(report.scenarios)} scenario(s){cancelled}, {report.total_passed} passed "
        f"({_percent(rate)}){duration}; {report.filters.describe()}"
    )


def render_table(report: Report) -> str:
    """A plain-text table for a terminal."""
    lines = [_headline(report), ""]
    if not report.scenarios:
        return "\n".join([*lines, "no runs in the history match"]) + "\n"
    rows = [TABLE_COLUMNS, *_rows(report)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_COLUMNS))]
    numeric = {1, 2, 3, 4, 5, 6, 7}
    for row in rows:
        cells = [cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    if report.failures:
        lines += ["", "Last failures:"]
        for run in report.failures:
            lines.append(
                f"  {_when(run.completed_at)}  {run.namespace}/{run.name}  {_outcome(run)}: {_one_line(run.message)}"
            )
    for stats, runs in latest_workflow_runs(report):
        lines += ["", f"Workflow {stats.scenario}, latest runs:"]
        for run in runs:
            lines.append(f"  {_when(run.completed_at)}  {run.namespace}/{run.name}  {_outcome(run)}")
            nodes = node_lines(run)
            width = max((len(node.name) for node in nodes), default=0)
            for node in nodes:
                said = f": {_one_line(node.message)}" if node.message and node.phase != "Passed" else ""
                child = f"  {node.test_run}" if node.test_run else ""
                lines.append(f"    {node.name.ljust(width)}  {node.outcome}{child}{said}")
    return "\n".join(lines) + "\n"


# --- JSON ----------------------------------------------------------------------------------------------------


def render_json(report: Report) -> str:
    """Everything in the report, machine-readable (times in RFC 3339, UTC)."""
    return json.dumps(report.to_dict(), indent=2) + "\n"


# --- Markdown ------------------------------------------------------------------------------------------------


def _md(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Report) -> str:
    """A Markdown summary, e.g. for a pull-request comment or a CI job summary."""
    lines = ["# Chaos test report", "", _md(_headline(report)), ""]
    if not report.scenarios:
        return "\n".join([*lines, "No runs in the history match."]) + "\n"
    lines.append("| " + " | ".join(c.title() if c != "P95 RECOVERY" else "P95 Recovery" for c in TABLE_COLUMNS) + " |")
    lines.append("| --- | " + " | ".join("---:" for _ in range(7)) + " | --- | --- |")
    for row in _rows(report):
        lines.append("| " + " | ".join(_md(cell) for cell in row) + " |")
    if report.failures:
        lines += ["", "## Last failures", ""]
        for run in report.failures:
            lines.append(
                f"- `{_md(run.namespace)}/{_md(run.name)}` ({_md(run.scenario)}), {_when(run.completed_at)}: "
                f"**{_md(_outcome(run))}** {_md(_one_line(run.message))}"
            )
    workflows = latest_workflow_runs(report)
    if workflows:
        lines += ["", "## Workflow runs"]
    for stats, runs in workflows:
        lines += ["", f"### {_md(stats.scenario)}", ""]
        for run in runs:
            lines.append(
                f"- `{_md(run.namespace)}/{_md(run.name)}`, {_when(run.completed_at)}: **{_md(_outcome(run))}**"
            )
            for node in node_lines(run):
                child = f" `{_md(node.test_run)}`" if node.test_run else ""
                said = f" {_md(_one_line(node.message))}" if node.message and node.phase != "Passed" else ""
                lines.append(f"  - {_md(node.name)}: **{_md(node.outcome)}**{child}{said}")
    return "\n".join(lines) + "\n"


# --- JUnit XML -----------------------------------------------------------------------------------------------

# A run's (or node's) phase in JUnit terms: Failed and TimedOut are failures, Error is an error, Cancelled and
# Skipped are skipped.
JUNIT_FAILURES = frozenset({"Failed", "TimedOut"})
JUNIT_SKIPPED = frozenset({"Cancelled", "Skipped"})  # Skipped: a workflow node whose condition did not hold
JUNIT_PHASES = frozenset({"Passed", "Error", *JUNIT_FAILURES, *JUNIT_SKIPPED})


def _junit_time(value: float | None) -> str:
    return f"{max(value or 0.0, 0.0):.3f}"


def _junit_case(
    suite: ET.Element, name: str, classname: str, phase: str, reason: str | None, detail: str, seconds: float | None
) -> ET.Element:
    """One testcase with its verdict: failure, error or skipped by ``phase`` (JUNIT_FAILURES, Error,
    JUNIT_SKIPPED)."""
    case = ET.SubElement(suite, "testcase", name=name, classname=classname, time=_junit_time(seconds))
    if phase in JUNIT_FAILURES:
        ET.SubElement(case, "failure", message=reason or phase, type=phase).text = detail
    elif phase == "Error":
        ET.SubElement(case, "error", message=reason or phase, type=phase).text = detail
    elif phase in JUNIT_SKIPPED:
        ET.SubElement(case, "skipped", message=reason or phase)
    return case


@dataclass
class _SuiteCounts:
    tests: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0
    time: float = 0.0

    def count(self, phase: str, seconds: float | None) -> None:
        self.tests += 1
        self.failures += phase in JUNIT_FAILURES
        self.errors += phase == "Error"
        self.skipped += phase in JUNIT_SKIPPED
        self.time += max(seconds or 0.0, 0.0)

    def write(self, suite: ET.Element) -> None:
        for name in ("tests", "failures", "errors", "skipped"):
            suite.set(name, str(getattr(self, name)))
        suite.set("time", _junit_time(self.time))


def _node_seconds(node: Mapping[str, Any], child: RunSummary | None) -> float | None:
    if child is not None and child.duration_seconds is not None:
        return child.duration_seconds
    started, completed = node.get("startedAt"), node.get("completedAt")
    if isinstance(started, str) and isinstance(completed, str):
        return (parse_iso(completed) - parse_iso(started)).total_seconds()
    return None


def _workflow_suite(root: ET.Element, group: RunGroup, index: int) -> _SuiteCounts:
    """One workflow run as a testsuite, each node a testcase (in the workflow's order): a Skipped node is a
    skipped testcase, a failed one carries its child's message. A workflow run that failed on its own (its
    steady state, its assertions, an error before any node) while no node did has a testcase of its own."""
    run = group.run
    workflow = run.workflow or run.scenario
    suite = ET.SubElement(
        root,
        "testsuite",
        name=f"{run.namespace}/{run.name}",
        timestamp=format_iso_seconds(run.completed_at).removesuffix("Z"),
        id=str(index),
    )
    properties = ET.SubElement(suite, "properties")
    for name, value in (("workflow", workflow), ("phase", _outcome(run)), ("recovery", _seconds(run.recovery_seconds))):
        ET.SubElement(properties, "property", name=name, value=value)
    counts = _SuiteCounts()
    children = {child.node: child for child in group.children}
    classname = workflow.replace("/", ".")
    for node in run.nodes:
        name = str(node.get("name"))
        child = children.get(name)
        phase = str(node.get("phase") or "Pending")
        # A node still Pending, Running or Suspended when its workflow run ended never got a verdict.
        verdict = phase if phase in JUNIT_PHASES else "Skipped"
        reason = node.get("reason") or (child.reason if child else None)
        detail = str(node.get("message") or (child.message if child else None) or phase)
        seconds = _node_seconds(node, child)
        case = _junit_case(suite, name, classname, verdict, reason, detail, seconds)
        lines = [f"phase: {phase}"]
        if node.get("testRun"):
            lines.append(f"testRun: {run.namespace}/{node['testRun']}")
        if node.get("recoveryTimeSeconds") is not None:
            lines.append(f"recovery: {_seconds(float(node['recoveryTimeSeconds']))}")
        ET.SubElement(case, "system-out").text = "\n".join(lines)
        counts.count(verdict, seconds)
    if run.phase != "Passed" and counts.failures + counts.errors == 0:
        _junit_case(
            suite, "(workflow)", classname, run.phase, run.reason, run.message or run.phase, run.duration_seconds
        )
        counts.count(run.phase, None)
    counts.write(suite)
    return counts


def render_junit(report: Report) -> str:
    """JUnit XML: one testsuite per scenario, one testcase per run, failures carrying the run's reason; one
    testsuite per workflow run, one testcase per node (its children are not listed again under their scenarios).

    The layout follows the schema CI servers read (Jenkins' junit-4.xsd); ``tests/data/junit.xsd`` checks it.
    """
    groups = grouped_runs(sorted(report.runs, key=lambda r: r.completed_at))
    by_scenario: dict[str, list[RunSummary]] = {}
    for group in sorted(groups, key=lambda g: (g.run.scenario, g.run.completed_at)):
        if group.run.workflow is None:
            by_scenario.setdefault(group.run.scenario, []).append(group.run)
    stats = {s.scenario: s for s in report.scenarios if not s.workflow}
    root = ET.Element("testsuites", name="test-coordinator")
    totals = _SuiteCounts()
    index = 0
    for index, (scenario, runs) in enumerate(by_scenario.items()):
        counts = _SuiteCounts()
        suite = ET.SubElement(
            root,
            "testsuite",
            name=scenario,
            # JUnit's timestamp has no zone (its XSD); ours is UTC.
            timestamp=format_iso_seconds(runs[0].completed_at).removesuffix("Z"),
            id=str(index),
        )
        if scenario in stats:
            properties = ET.SubElement(suite, "properties")
            s = stats[scenario]
            for name, value in (
                ("passRate", _percent(s.pass_rate)),
                ("meanDuration", _seconds(s.mean_duration)),
                ("meanRecovery", _seconds(s.mean_recovery)),
                ("p95Recovery", _seconds(s.p95_recovery)),
                ("flaky", str(s.flaky).lower()),
            ):
                ET.SubElement(properties, "property", name=name, value=value)
        for run in runs:
            detail = run.message or run.phase
            case = _junit_case(
                suite,
                f"{run.namespace}/{run.name}",
                scenario.replace("/", "."),
                run.phase,
                run.reason,
                detail,
                run.duration_seconds,
            )
            out = f"phase: {run.phase}\ncompleted: {_iso(run.completed_at)}\nrecovery: {_seconds(run.recovery_seconds)}"
            ET.SubElement(case, "system-out").text = out
            counts.count(run.phase, run.duration_seconds)
        counts.write(suite)
        totals.tests += counts.tests
        totals.failures += counts.failures
        totals.errors += counts.errors
        totals.time += counts.time
    for group in groups:
        if group.run.workflow is not None:
            index += 1
            counts = _workflow_suite(root, group, index)
            totals.tests += counts.tests
            totals.failures += counts.failures
            totals.errors += counts.errors
            totals.time += group.run.duration_seconds or 0.0
    for name in ("tests", "failures", "errors"):
        root.set(name, str(getattr(totals, name)))
    root.set("time", _junit_time(totals.time))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# --- HTML ----------------------------------------------------------------------------------------------------

CHART_WIDTH = 880
CHART_HEIGHT = 220
CHART_MARGIN = (16, 16, 36, 56)  # top, right, bottom, left
LINE_COLOUR = "#2563eb"
GOOD_COLOUR = "#16a34a"
BAD_COLOUR = "#dc2626"
MUTED_COLOUR = "#6b7280"


def _nice_ceiling(value: float) -> float:
    """A round axis maximum at or above ``value`` (1, 2, 2.5, 5 x 10^n)."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return float(step * magnitude)
    return float(10 * magnitude)


def trend_svg(stats: ScenarioStats) -> str:
    """An inline SVG chart of recovery time per run (oldest left), markers coloured by verdict,
    with the mean and p95 as reference lines. Runs without a measured recovery sit on the axis, hollow."""
    top, right, bottom, left = CHART_MARGIN
    width, height = CHART_WIDTH, CHART_HEIGHT
    plot_w, plot_h = width - left - right, height - top - bottom
    runs = stats.trend
    measured = [r.recovery_seconds for r in runs if r.recovery_seconds is not None]
    y_max = _nice_ceiling(max([*measured, stats.p95_recovery or 0.0, 0.0]) * 1.1)

    def x_of(index: int) -> float:
        return left + (plot_w / 2 if len(runs) == 1 else plot_w * index / (len(runs) - 1))

    def y_of(value: float) -> float:
        return top + plot_h - plot_h * value / y_max

    label = html.escape(f"Recovery time of the last {len(runs)} run(s) of {stats.scenario}")
    parts = [
        f'<svg class="trend" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{label}">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#f9fafb" stroke="#e5e7eb"/>',
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = y_of(y_max * fraction)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#e5e7eb"/>')
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="{MUTED_COLOUR}">'
            f"{y_max * fraction:g}s</text>"
        )
    for value, name, dash in ((stats.mean_recovery, "mean", "6 4"), (stats.p95_recovery, "p95", "2 3")):
        if value is not None:
            y = y_of(value)
            parts.append(
                f'<line class="{name}" x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" '
                f'stroke="{MUTED_COLOUR}" stroke-dasharray="{dash}"/>'
                f'<text x="{left + plot_w - 4}" y="{y - 4:.1f}" text-anchor="end" font-size="11" '
                f'fill="{MUTED_COLOUR}">{name} {value:.2f}s</text>'
            )
    points = [(x_of(i), y_of(r.recovery_seconds)) for i, r in enumerate(runs) if r.recovery_seconds is not None]
    if len(points) > 1:
        joined = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        parts.append(f'<polyline class="recovery" points="{joined}" fill="none" stroke="{LINE_COLOUR}" '
                     'stroke-width="2.5" stroke-linejoin="round"/>')  # fmt: skip
    for index, run in enumerate(runs):
        colour = GOOD_COLOUR if run.passed else BAD_COLOUR
        tip = html.escape(
            f"{run.namespace}/{run.name}: {_outcome(run)}, recovery {_seconds(run.recovery_seconds)}, "
            f"{_when(run.completed_at)}"
        )
        if run.recovery_seconds is None:
            cy, fill = y_of(0.0), "#ffffff"
        else:
            cy, fill = y_of(run.recovery_seconds), colour
        parts.append(
            f'<circle class="run {"passed" if run.passed else "failed"}" cx="{x_of(index):.1f}" cy="{cy:.1f}" r="5" '
            f'fill="{fill}" stroke="{colour}" stroke-width="2"><title>{tip}</title></circle>'
        )
    if runs:
        base = top + plot_h + 22
        parts.append(f'<text x="{left}" y="{base}" font-size="11" fill="{MUTED_COLOUR}">'
                     f"{html.escape(_when(runs[0].completed_at))}</text>")  # fmt: skip
        if len(runs) > 1:
            parts.append(
                f'<text x="{left + plot_w}" y="{base}" text-anchor="end" font-size="11" fill="{MUTED_COLOUR}">'
                f"{html.escape(_when(runs[-1].completed_at))}</text>"
            )
    if not measured:
        parts.append(
            f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" text-anchor="middle" font-size="13" '
            f'fill="{MUTED_COLOUR}">no recovery time measured (the scenario has no steady-state probes)</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


HTML_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 60rem;
       color: #111827; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .25rem; } h2 { font-size: 1.15rem; margin: 0 0 .5rem; }
.sub { color: #6b7280; margin-top: 0; }
table { border-collapse: collapse; width: 100%; margin: 1rem 0 2rem; font-size: .9rem; }
th, td { text-align: left; padding: .4rem .6rem; border-bottom: 1px solid #e5e7eb; }
th, td.when { white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.card { border: 1px solid #e5e7eb; border-radius: .5rem; padding: 1rem 1.25rem; margin-bottom: 1.5rem; }
.badges span { display: inline-block; margin: 0 .4rem .5rem 0; padding: .1rem .5rem; border-radius: 1rem;
               background: #f3f4f6; font-size: .8rem; }
.badges .bad { background: #fee2e2; color: #991b1b; } .badges .good { background: #dcfce7; color: #166534; }
.badges .warn { background: #fef3c7; color: #92400e; }
svg.trend { width: 100%; height: auto; }
ul.failures { font-size: .85rem; color: #374151; padding-left: 1.2rem; }
.legend { font-size: .8rem; color: #6b7280; }
"""


def render_html(report: Report) -> str:
    """A self-contained HTML page: the summary table and, per scenario, a recovery-time trend chart."""
    esc = html.escape
    rows = []
    for s in report.scenarios:
        rows.append(
            "<tr>"
            f'<td><a href="#{esc(_anchor(_label(s)))}">{esc(_label(s))}</a></td>'
            f'<td class="num">{s.runs}</td><td class="num">{s.passed}</td><td class="num">{s.cancelled}</td>'
            f'<td class="num">{_percent(s.pass_rate)}</td><td class="num">{_seconds(s.mean_duration)}</td>'
            f'<td class="num">{_seconds(s.mean_recovery)}</td>'
            f'<td class="num">{_seconds(s.p95_recovery)}</td><td>{"yes" if s.flaky else "no"}</td>'
            f'<td class="when">{esc(_when(s.last_run_at))}</td></tr>'
        )
    cards = []
    latest = dict((id(stats), runs) for stats, runs in latest_workflow_runs(report))
    for s in report.scenarios:
        rate_class = "good" if s.failed == 0 else "bad"
        badges = [
            f'<span class="{rate_class}">{_percent(s.pass_rate)} passed ({s.passed}/{s.decided})</span>',
            f"<span>mean duration {_seconds(s.mean_duration)}</span>",
            f"<span>mean recovery {_seconds(s.mean_recovery)}</span>",
            f"<span>p95 recovery {_seconds(s.p95_recovery)}</span>",
        ]
        if s.cancelled:
            badges.append(f"<span>{s.cancelled} cancelled (not in the pass rate)</span>")
        if s.flaky:
            badges.append('<span class="warn">flaky: mixed verdicts</span>')
        if s.type:
            badges.append(f"<span>{esc(s.type)}</span>")
        failures = "".join(
            f"<li><b>{esc(f.namespace)}/{esc(f.name)}</b> {esc(_when(f.completed_at))}: {esc(_outcome(f))} "
            f"{esc(_one_line(f.message))}</li>"
            for f in s.last_failures
        )
        workflow_runs = "".join(
            f"<li><b>{esc(run.namespace)}/{esc(run.name)}</b> {esc(_when(run.completed_at))}: {esc(_outcome(run))}"
            '<ol class="nodes">'
            + "".join(
                f"<li>{esc(node.name)}: {esc(node.outcome)}"
                + (f" <code>{esc(node.test_run)}</code>" if node.test_run else "")
                + (f" {esc(_one_line(node.message))}" if node.message and node.phase != "Passed" else "")
                + "</li>"
                for node in node_lines(run)
            )
            + "</ol></li>"
            for run in latest.get(id(s), [])
        )
        cards.append(
            f'<section class="card" id="{esc(_anchor(_label(s)))}"><h2>{esc(_label(s))}</h2>'
            f'<div class="badges">{"".join(badges)}</div>{trend_svg(s)}'
            f'<p class="legend">Recovery time per run, oldest left (last {len(s.trend)}); '
            f'<span style="color:{GOOD_COLOUR}">●</span> passed, <span style="color:{BAD_COLOUR}">●</span> '
            "not passed, hollow: no recovery measured.</p>"
            + (f'<h3>Last failures</h3><ul class="failures">{failures}</ul>' if failures else "")
            + (f'<h3>Latest runs, node by node</h3><ul class="failures">{workflow_runs}</ul>' if workflow_runs else "")
            + "</section>"
        )
    header = "".join(
        f'<th class="num">{esc(c.title())}</th>' if i in (1, 2, 3, 4, 5, 6, 7) else f"<th>{esc(c.title())}</th>"
        for i, c in enumerate(TABLE_COLUMNS)
    )
    body = (
        f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>{''.join(cards)}"
        if report.scenarios
        else "<p>No runs in the history match.</p>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Chaos test report</title><style>{HTML_STYLE}</style></head><body>"
        f"<h1>Chaos test report</h1>"
        f'<p class="sub">{esc(_headline(report))}. Generated {esc(_when(report.generated_at))}'
        f"{f' from {esc(report.source)}' if report.source else ''}.</p>"
        f"{body}</body></html>\n"
    )


def _anchor(scenario: str) -> str:
    return "s-" + "".join(c if c.isalnum() or c == "-" else "-" for c in scenario)


RENDERERS: dict[str, Callable[[Report], str]] = {
    "table": render_table,
    "json": render_json,
    "markdown": render_markdown,
    "junit": render_junit,
    "html": render_html,
}


def render(report: Report, fmt: str) -> str:
    """Render ``report`` in one of ``FORMATS``."""
    try:
        renderer = RENDERERS[fmt]
    except KeyError:
        raise ValueError(f"unknown report format {fmt!r}; choose one of {', '.join(FORMATS)}") from None
    return renderer(report)


def needs_runs(fmt: str) -> bool:
    """Whether the format lists every run (and so the store must fetch them, not only the aggregates): JUnit
    has a test case per run, JSON is the audit trail (each run with its correlationId and requestedBy)."""
    return fmt in ("junit", "json")
