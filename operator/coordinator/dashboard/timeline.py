"""What a run page draws, built purely from a TestRun (or the status its history record kept).

The model is plain JSON: the page embeds it, ``static/run.js`` draws it as SVG, and the run's event stream sends
a new one on every change. Times are milliseconds since the epoch; an open span (a change still applied, a step
still holding) ends at ``now``, which the caller passes in so that the model stays a function of its arguments.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from coordinator.api.models import TERMINAL_PHASES

JSON = dict[str, Any]


def epoch_ms(value: object) -> float | None:
    """An RFC 3339 timestamp (or a datetime) as milliseconds since the epoch; None when there is none."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000, 3)


def target_key(target: Mapping[str, Any]) -> str:
    """A target's row label: kind/namespace/name (kind/name for cluster-scoped objects)."""
    parts = [str(target.get("kind") or "?"), str(target.get("namespace") or ""), str(target.get("name") or "?")]
    return "/".join(p for p in parts if p)


def _steps(status: Mapping[str, Any]) -> list[JSON]:
    rows = []
    for index, record in enumerate(status.get("steps") or []):
        start = epoch_ms(record.get("injectedAt"))
        reverted = epoch_ms(record.get("revertedAt"))
        recovery = record.get("recoveryTimeSeconds")
        recovery_end = start + float(recovery) * 1000 if start is not None and recovery is not None else None
        rows.append(
            {
                "index": index,
                "name": str(record.get("name") or f"step {index}"),
                "outcome": str(record.get("outcome") or "Pending"),
                "start": start,
                "end": reverted if reverted is not None else epoch_ms(record.get("endsAt")),
                "reverted": reverted is not None,
                "recoverySeconds": recovery,
                "recoveryEnd": recovery_end,
                "message": record.get("message") or "",
            }
        )
    return rows


def _targets(status: Mapping[str, Any], steps: Sequence[JSON]) -> list[JSON]:
    """One row per target, in the order the ledger first names it; each change a bar."""
    names = {step["index"]: step["name"] for step in steps}
    rows: dict[str, JSON] = {}
    for injection in status.get("injections") or []:
        target = injection.get("target") or {}
        key = target_key(target)
        row = rows.setdefault(key, {"key": key, "kind": target.get("kind") or "", "changes": []})
        step = injection.get("step")
        row["changes"].append(
            {
                "id": str(injection.get("id") or ""),
                "step": step,
                "stepName": names.get(step, ""),
                "fault": str(injection.get("fault") or ""),
                "state": str(injection.get("state") or ""),
                "start": epoch_ms(injection.get("appliedAt")),
                "end": epoch_ms(injection.get("revertedAt")),
                "message": injection.get("message") or "",
            }
        )
    return list(rows.values())


def _probes(status: Mapping[str, Any]) -> list[JSON]:
    rows = []
    for probe in status.get("probes") or []:
        marks = [
            {"at": at, "ok": bool(mark.get("ok"))}
            for mark in probe.get("recent") or []
            if (at := epoch_ms(mark.get("at"))) is not None
        ]
        rows.append(
            {
                "name": str(probe.get("name") or ""),
                "type": probe.get("type") or "",
                "mode": probe.get("mode") or "",
                "samples": probe.get("samples") or 0,
                "passed": probe.get("passed") or 0,
                "failed": probe.get("failed") or 0,
                "verdict": probe.get("verdict"),
                "lastError": probe.get("lastError"),
                "marks": marks,
            }
        )
    return rows


def _assertions(status: Mapping[str, Any]) -> list[JSON]:
    return [
        {
            "name": str(a.get("name") or ""),
            "type": a.get("type") or "",
            "expected": a.get("expected") or "",
            "actual": a.get("actual"),
            "passed": bool(a.get("passed")),
            "message": a.get("message"),
        }
        for a in status.get("assertions") or []
    ]


def depths(depends_on: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Each node's layer: 0 without dependencies, else one more than its deepest dependency. An unknown
    dependency counts as none; a node on a cycle (never admitted, but a snapshot is data) stays at the depth its
    acyclic part gives."""
    found: dict[str, int] = {}

    def depth(name: str, seen: frozenset[str]) -> int:
        if name in found:
            return found[name]
        deps = [d for d in depends_on.get(name, ()) if d in depends_on and d not in seen]
        value = 1 + max((depth(d, seen | {name}) for d in deps), default=-1)
        found[name] = value
        return value

    for name in depends_on:
        depth(name, frozenset())
    return found


def _snapshot_nodes(status: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    snapshot = status.get("workflowSnapshot")
    if not isinstance(snapshot, str) or not snapshot:
        return []
    try:
        spec = json.loads(snapshot)
    except ValueError:
        return []
    nodes = spec.get("nodes") if isinstance(spec, dict) else None
    return [n for n in nodes or [] if isinstance(n, dict) and n.get("name")]


def _dag(status: Mapping[str, Any]) -> tuple[list[JSON], list[list[str]]]:
    """A workflow run's nodes (with their layer) and dependency edges; empty for a scenario run."""
    declared = _snapshot_nodes(status)
    states = {str(n.get("name")): n for n in status.get("nodes") or [] if n.get("name")}
    order = [str(n["name"]) for n in declared] + [name for name in states if name not in {n["name"] for n in declared}]
    depends_on = {str(n["name"]): [str(d) for d in n.get("dependsOn") or []] for n in declared}
    for name in order:
        depends_on.setdefault(name, [])
    layer = depths(depends_on)
    kinds = {str(n["name"]): "suspend" if n.get("suspend") is not None else "scenario" for n in declared}
    nodes = []
    for name in order:
        state = states.get(name, {})
        nodes.append(
            {
                "name": name,
                "kind": kinds.get(name, "scenario"),
                "phase": str(state.get("phase") or "Pending"),
                "testRun": state.get("testRun"),
                "depth": layer[name],
                "dependsOn": depends_on[name],
                "reason": state.get("reason") or "",
                "message": state.get("message") or "",
                "start": epoch_ms(state.get("startedAt")),
                "end": epoch_ms(state.get("completedAt")),
                "score": state.get("resilienceScore"),
            }
        )
    edges = [[dep, name] for name in order for dep in depends_on[name] if dep in layer]
    return nodes, edges


def _bounds(steps: Sequence[JSON], targets: Sequence[JSON], probes: Sequence[JSON], begin: float | None) -> list[float]:
    times = [begin] if begin is not None else []
    for step in steps:
        times += [t for t in (step["start"], step["end"], step["recoveryEnd"]) if t is not None]
    for row in targets:
        for change in row["changes"]:
            times += [t for t in (change["start"], change["end"]) if t is not None]
    for probe in probes:
        times += [mark["at"] for mark in probe["marks"]]
    return times


def build(testrun: Mapping[str, Any], now: float, *, source: str = "cluster") -> JSON:
    """The timeline model of ``testrun`` (a TestRun as the API server returns it) at ``now`` (epoch ms).

    ``source`` says where it was read: "cluster" (the TestRun) or "history" (the status its history record
    kept, once the TestRun is gone).
    """
    meta = testrun.get("metadata") or {}
    spec = testrun.get("spec") or {}
    status = testrun.get("status") or {}
    phase = str(status.get("phase") or "Pending")
    active = phase not in TERMINAL_PHASES
    steps = _steps(status)
    targets = _targets(status, steps)
    probes = _probes(status)
    nodes, edges = _dag(status)
    started = epoch_ms(status.get("startedAt"))
    completed = epoch_ms(status.get("completedAt"))
    times = _bounds(steps, targets, probes, started)
    begin = min(times, default=now)
    end = max([*times, *([completed] if completed is not None else []), *([now] if active else [])], default=now)
    ref = spec.get("scenarioRef") or spec.get("workflowRef") or {}
    return {
        "run": {
            "namespace": meta.get("namespace") or "",
            "name": meta.get("name") or "",
            "uid": meta.get("uid") or "",
            "resourceVersion": meta.get("resourceVersion") or "",
            "scenario": status.get("scenario") or ref.get("name") or "",
            "workflow": status.get("workflow") or ("workflowRef" in spec and ref.get("name")) or "",
            "active": active,
            "abortRequested": bool(spec.get("abort")),
            "dryRun": bool(spec.get("dryRun")),
            "source": source,
        },
        "verdict": {
            "phase": phase,
            "reason": status.get("reason") or "",
            "message": status.get("message") or "",
            "score": status.get("resilienceScore"),
            "recoverySeconds": status.get("recoveryTimeSeconds"),
            "duration": status.get("duration") or "",
            "step": status.get("step") or "",
        },
        "now": now,
        "begin": begin,
        "end": max(end, begin + 1000),  # at least a second wide, so that a run that just started has a scale
        "started": started,
        "completed": completed,
        "steps": steps,
        "targets": targets,
        "probes": probes,
        "assertions": _assertions(status),
        "nodes": nodes,
        "edges": edges,
    }


def from_history(record: Mapping[str, Any]) -> JSON:
    """A TestRun-shaped document from a history record (``HistoryStore.get_run``): its kept status, name and
    namespace; the spec is gone with the object."""
    status = record.get("status") or {}
    return {
        "metadata": {"namespace": record.get("namespace"), "name": record.get("name"), "uid": record.get("uid")},
        "spec": {},
        "status": dict(status) if isinstance(status, Mapping) else {},
    }
