"""Scheduled ChaosScenarios and ChaosWorkflows: create their TestRuns on time, apply the concurrency policy, prune
old runs.

A ChaosScenario (or ChaosWorkflow) with ``spec.schedule`` behaves like a CronJob and its TestRuns like Jobs; the
two kinds differ only in what their runs name (``Schedulable``). Every reconcile starts from
what the API server holds (the scenario, and the TestRuns it controls), never from memory, so a restarted operator
or a second replica reaches the same decisions; the deterministic run name of each scheduled time
(``coordinator.domain.schedule.run_name``) turns a repeated creation into 409 AlreadyExists, never a duplicate.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from coordinator.adapters.kube import ApiError, KubeApi, resource_path
from coordinator.api.models import (
    API_VERSION,
    GROUP,
    REQUESTED_BY_ANNOTATION,
    RUN_NOW_ANNOTATION,
    TERMINAL_PHASES,
    Phase,
    ScenarioScheduling,
    Target,
)
from coordinator.domain.lifecycle import fires
from coordinator.domain.schedule import (
    Action,
    ScheduleError,
    decide,
    due_time,
    label_value,
    parse_schedule,
    run_name,
    run_now_name,
)
from coordinator.domain.timestamps import format_iso_seconds, parse_iso
from coordinator.engine.events import post_event
from coordinator.engine.pausing import PAUSES, Pause, run_scope
from coordinator.engine.sweeper import list_scoped, release_our_finalizer, stuck_on_our_finalizer

log = logging.getLogger(__name__)

# On every scheduled TestRun: the scenario's (or workflow's) name (cut to a label value) and the time it was
# scheduled for.
SCENARIO_LABEL = f"{GROUP}/scenario"
WORKFLOW_LABEL = f"{GROUP}/workflow"
SCHEDULED_AT_ANNOTATION = f"{GROUP}/scheduled-at"
# GitOps: set (or change) RUN_NOW_ANNOTATION on a ChaosScenario or ChaosWorkflow, in Git, to start one run of it
# per new value.
__all__ = ["RUN_NOW_ANNOTATION", "SCENARIO_LABEL", "SCHEDULED_AT_ANNOTATION", "WORKFLOW_LABEL"]


@dataclass(frozen=True)
class Schedulable:
    """A kind whose objects start TestRuns by themselves (schedule, run-now, triggers): what its runs say of it."""

    kind: str  # ChaosScenario, ChaosWorkflow
    ref_field: str  # the TestRun spec field that names it: scenarioRef, workflowRef
    label: str  # the label its runs carry, valued with its name

    def owner_reference(self, meta: Mapping[str, Any]) -> dict[str, Any]:
        """It controls the runs it starts: deleting it deletes them (Kubernetes' garbage collector)."""
        return {
            "apiVersion": API_VERSION,
            "kind": self.kind,
            "name": meta["name"],
            "uid": meta["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }


SCENARIOS = Schedulable("ChaosScenario", "scenarioRef", SCENARIO_LABEL)
WORKFLOWS = Schedulable("ChaosWorkflow", "workflowRef", WORKFLOW_LABEL)
SCHEDULABLE = {each.kind: each for each in (SCENARIOS, WORKFLOWS)}


def schedulable_of(body: Mapping[str, Any]) -> Schedulable:
    """The kind of ``body``, a ChaosScenario or a ChaosWorkflow (ValueError for anything else)."""
    kind = body.get("kind")
    if kind not in SCHEDULABLE:
        raise ValueError(f"{kind!r} starts no TestRuns of its own: expected one of {', '.join(SCHEDULABLE)}")
    return SCHEDULABLE[str(kind)]


def scheduling_of(spec: Mapping[str, Any]) -> ScenarioScheduling:
    """The scheduling fields of a scenario's or workflow's spec (pydantic's ValidationError when malformed)."""
    return ScenarioScheduling.model_validate(
        {key: value for key, value in spec.items() if key in ScenarioScheduling.model_fields}
    )


def prunable(run: Mapping[str, Any]) -> bool:
    """Whether a finished scheduled TestRun may be deleted by the history limits: only once it is mirrored.

    The history store is always on (an embedded SQLite file when no database is configured), so a run without
    ``status.history.synced: true`` has simply not been mirrored yet; deleting it would lose it.
    """
    history = (run.get("status") or {}).get("history")
    return isinstance(history, Mapping) and history.get("synced") is True


@dataclass(frozen=True)
class OwnedRun:
    """A TestRun the scenario's schedule created, as the scheduler sees it."""

    name: str
    uid: str
    phase: str | None
    scheduled: str | None
    created: str
    body: Mapping[str, Any]

    @property
    def active(self) -> bool:
        return self.phase not in TERMINAL_PHASES

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> OwnedRun:
        meta = body["metadata"]
        return cls(
            name=meta["name"],
            uid=meta["uid"],
            phase=(body.get("status") or {}).get("phase"),
            scheduled=(meta.get("annotations") or {}).get(SCHEDULED_AT_ANNOTATION),
            created=meta.get("creationTimestamp") or "",
            body=body,
        )


def needs_reconcile(scenario: Mapping[str, Any], now: datetime) -> bool:
    """Whether a timer tick has anything to do, judged from the (possibly slightly stale) cached object.

    Ticks are frequent; most of them find nothing due and no run to watch, and cost no API call.
    """
    meta = scenario.get("metadata") or {}
    status = scenario.get("status") or {}
    spec = scenario.get("spec") or {}
    if status.get("observedGeneration") != meta.get("generation") or status.get("active"):
        return True
    if spec.get("suspend") or not fires(spec):
        return False
    try:
        parse_schedule(str(spec.get("schedule") or ""), spec.get("timeZone"))
    except ScheduleError:
        return False  # reported once (an Event) when this generation was observed; nothing to do until it changes
    upcoming = status.get("nextScheduleTime")
    return upcoming is None or now >= parse_iso(upcoming)


def _owned_by(body: Mapping[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid and ref.get("controller") for ref in body["metadata"].get("ownerReferences") or [])


def run_now_due(scenario: Mapping[str, Any]) -> str | None:
    """The ``run-now`` token that has not started its run yet, if any (pure)."""
    token = (scenario.get("metadata", {}).get("annotations") or {}).get(RUN_NOW_ANNOTATION) or None
    done = (scenario.get("status") or {}).get("lastRunNowToken")
    return token if token and token != done else None


async def start_run_now(client: KubeApi, scenario: Mapping[str, Any]) -> str | None:
    """Create the TestRun for a new ``run-now`` token (once: its name comes from the token), then record the token
    in the scenario's status. Returns the run's name, or None when there was nothing to start."""
    token = run_now_due(scenario)
    if token is None:
        return None
    meta = scenario["metadata"]
    scheduling = scheduling_of(scenario.get("spec") or {})
    body = run_body(scenario, scheduling, datetime.now(UTC))
    name = run_now_name(meta["name"], token)
    body["metadata"]["name"] = name
    body["metadata"]["annotations"] = {RUN_NOW_ANNOTATION: token, **requested_by(scenario)}
    try:
        await client.create(resource_path("TestRun", meta["namespace"]), body)
    except ApiError as exc:
        if not exc.conflict:  # AlreadyExists: an earlier attempt created it before its status write was lost
            raise
    await client.patch(
        resource_path(schedulable_of(scenario).kind, meta["namespace"], meta["name"], "status"),
        {"status": {"lastRunNowToken": token}},
    )
    return name


def requested_by(scenario: Mapping[str, Any]) -> dict[str, str]:
    """The scenario's (or workflow's) requested-by annotation, for the runs made from it: a scheduled or triggered
    run acts with the rights of whoever last changed the spec (the admission webhook trusts the copy only from
    the operator)."""
    value = (scenario["metadata"].get("annotations") or {}).get(REQUESTED_BY_ANNOTATION)
    return {REQUESTED_BY_ANNOTATION: value} if value is not None else {}


def run_body(scenario: Mapping[str, Any], scheduling: ScenarioScheduling, scheduled: datetime) -> dict[str, Any]:
    """The TestRun a ChaosScenario or ChaosWorkflow starts at ``scheduled``: named for that time, owned and labelled
    by it, its spec from ``runTemplate``, the requester copied. Callers starting it for another reason (run-now,
    a trigger) rename it and replace the annotations."""
    meta = scenario["metadata"]
    kind = schedulable_of(scenario)
    spec: dict[str, Any] = {kind.ref_field: {"name": meta["name"]}}
    template = scheduling.runTemplate
    if template is not None:
        if template.parameters:
            spec["parameters"] = dict(template.parameters)
        if template.timeout:
            spec["timeout"] = template.timeout
        if template.dryRun:
            spec["dryRun"] = True
    return {
        "apiVersion": API_VERSION,
        "kind": "TestRun",
        "metadata": {
            "name": run_name(meta["name"], scheduled),
            "namespace": meta["namespace"],
            # The scenario's labels too: a sharded operator (--selector) then runs them where it schedules them.
            "labels": {**(meta.get("labels") or {}), kind.label: label_value(meta["name"])},
            "annotations": {SCHEDULED_AT_ANNOTATION: format_iso_seconds(scheduled), **requested_by(scenario)},
            "ownerReferences": [kind.owner_reference(meta)],
        },
        "spec": spec,
    }


class Scheduler:
    """One reconcile of one scheduled scenario or workflow, from a fresh read of the API server."""

    def __init__(self, client: KubeApi, scenario: Mapping[str, Any]) -> None:
        self.client = client
        self.scenario = scenario
        self.kind = schedulable_of(scenario)
        meta = scenario["metadata"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.uid: str = meta["uid"]

    @property
    def ref(self) -> str:
        return f"{self.kind.kind} {self.namespace}/{self.name}"

    async def owned_runs(self) -> list[OwnedRun]:
        items = await self.client.list(
            resource_path("TestRun", self.namespace), label_selector=f"{self.kind.label}={label_value(self.name)}"
        )
        runs = [OwnedRun.of(item) for item in items if _owned_by(item, self.uid)]
        return sorted(runs, key=lambda run: (run.scheduled or run.created, run.name))

    async def prune(self, runs: list[OwnedRun], scheduling: ScenarioScheduling) -> list[str]:
        """Delete the oldest finished runs beyond the history limits (Passed, and the rest); returns their names."""
        passed = [r for r in runs if r.phase == Phase.PASSED]
        failed = [r for r in runs if r.phase in TERMINAL_PHASES and r.phase != Phase.PASSED]
        doomed: list[OwnedRun] = []
        for finished, limit in (
            (passed, scheduling.successfulRunsHistoryLimit),
            (failed, scheduling.failedRunsHistoryLimit),
        ):
            excess = len(finished) - limit
            doomed += [run for run in finished[: max(excess, 0)] if prunable(run.body)]
        deleted = []
        for run in doomed:
            try:
                await self.client.delete(resource_path("TestRun", self.namespace, run.name))
            except ApiError as exc:
                if not exc.not_found:
                    raise
            deleted.append(run.name)
        return deleted

    async def create(self, scheduling: ScenarioScheduling, scheduled: datetime) -> str:
        """Create the run of ``scheduled``; an existing one (another replica, an earlier process) counts as done."""
        body = run_body(self.scenario, scheduling, scheduled)
        name: str = body["metadata"]["name"]
        try:
            await self.client.create(resource_path("TestRun", self.namespace), body)
        except ApiError as exc:
            if exc.status == 409:
                log.info("%s: TestRun %s exists already (created by an earlier or another operator)", self.ref, name)
                return name
            raise
        await post_event(
            self.client, self.scenario, "Scheduled", f"created TestRun {name} for {format_iso_seconds(scheduled)}"
        )
        return name

    async def abort(self, runs: list[OwnedRun]) -> None:
        """Concurrency policy Replace: abort the active runs (their faults are reverted, they end Cancelled)."""
        for run in runs:
            try:
                await self.client.patch(resource_path("TestRun", self.namespace, run.name), {"spec": {"abort": True}})
            except ApiError as exc:
                if not exc.not_found:
                    raise
            await post_event(self.client, self.scenario, "Replaced", f"aborted TestRun {run.name} (Replace policy)")

    async def reconcile(self, now: datetime) -> None:
        """Bring the scenario's scheduled runs and schedule status up to date with ``now``."""
        spec = self.scenario.get("spec") or {}
        status = self.scenario.get("status") or {}
        generation = self.scenario["metadata"].get("generation")
        try:
            scheduling = scheduling_of(spec)
            schedule = parse_schedule(scheduling.schedule or "", scheduling.timeZone)
        except (ValidationError, ScheduleError) as exc:
            if status.get("observedGeneration") != generation:  # report once per change, not every tick
                await post_event(self.client, self.scenario, "InvalidSchedule", f"spec.schedule: {exc}", "Warning")
                await self.write_status(status, {"observedGeneration": generation, "nextScheduleTime": None})
            return
        runs = await self.owned_runs()
        await self.prune(runs, scheduling)
        active = [run for run in runs if run.active]
        last = status.get("lastScheduleTime")
        update: dict[str, Any] = {"observedGeneration": generation}
        if scheduling.suspend or not fires(spec):  # archived: stopped like a suspended schedule
            update["nextScheduleTime"] = None
        else:
            due = due_time(
                schedule,
                now,
                parse_iso(last) if last else None,
                parse_iso(self.scenario["metadata"]["creationTimestamp"]),
                scheduling.startingDeadlineSeconds,
            )
            exists = due is not None and run_name(self.name, due) in {run.name for run in runs}
            action = decide(due, exists, scheduling.concurrencyPolicy, len(active))
            pause = self.pause() if due is not None and action in (Action.CREATE, Action.REPLACE) else None
            if due is not None and pause is not None:
                # Like a missed tick: nothing piles up Pending during an emergency stop to start all at once after.
                await post_event(
                    self.client,
                    self.scenario,
                    "Skipped",
                    f"no TestRun for {format_iso_seconds(due)}: {pause.label}",
                    "Warning",
                )
                action = Action.NONE  # the time is consumed (lastScheduleTime), as a missed one
            if due is not None and action in (Action.CREATE, Action.REPLACE):
                if action == Action.REPLACE:
                    await self.abort(active)
                name = await self.create(scheduling, due)
                active.append(OwnedRun(name, "", Phase.PENDING, format_iso_seconds(due), "", {}))
            if due is not None and action != Action.WAIT:
                update["lastScheduleTime"] = format_iso_seconds(due)
            update["nextScheduleTime"] = format_iso_seconds(schedule.next_after(now))
        update["active"] = [
            {"name": run.name, **({"uid": run.uid} if run.uid else {}), "scheduledTime": run.scheduled}
            for run in active
            if run.scheduled
        ]
        await self.write_status(status, update)

    def pause(self) -> Pause | None:
        """The emergency stop that covers this scenario's runs (its namespace, its target namespaces), if any."""
        return pause_of(self.scenario)

    async def write_status(self, current: Mapping[str, Any], update: dict[str, Any]) -> None:
        """Merge ``update`` into the scenario's status, skipping the write when nothing changes."""
        if all(current.get(key) == value for key, value in update.items()):
            return
        try:
            await self.client.patch(
                resource_path(self.kind.kind, self.namespace, self.name, "status"), {"status": update}
            )
        except ApiError as exc:
            if not exc.not_found:
                raise


def pause_of(scenario: Mapping[str, Any]) -> Pause | None:
    """The emergency stop that covers the runs a scenario or workflow starts, if any: its namespace, and a
    scenario's target namespaces. (A workflow's nodes are checked by each node's run as it starts.)"""
    namespace = scenario["metadata"]["namespace"]
    target = None
    if schedulable_of(scenario) == SCENARIOS:
        # A malformed target: the run would end Error; the scenario's own namespace still counts.
        with contextlib.suppress(ValidationError):
            target = Target.model_validate((scenario.get("spec") or {}).get("target") or {})
    return PAUSES.pausing(run_scope(namespace, namespace, target))


async def reconcile_schedule(client: KubeApi, cached: Mapping[str, Any], now: datetime | None = None) -> None:
    """Reconcile one scheduled scenario or workflow if the cached object says there may be something to do."""
    now = now or datetime.now(UTC)
    if not needs_reconcile(cached, now):
        return
    meta = cached["metadata"]
    # The cached object may lag behind our own last status write; decisions are taken on what is stored.
    fresh = await client.get_or_none(resource_path(schedulable_of(cached).kind, meta["namespace"], meta["name"]))
    if fresh is None or fresh["metadata"]["uid"] != meta["uid"] or fresh["metadata"].get("deletionTimestamp"):
        return
    await Scheduler(client, fresh).reconcile(now)


async def release_deleted_scenarios(
    client: KubeApi, namespaces: Sequence[str] | None = None, grace: float = 10.0
) -> list[str]:
    """Remove our finalizer from ChaosScenarios and ChaosWorkflows whose deletion has waited on it for more than
    ``grace`` seconds.

    kopf keeps that finalizer on a scheduled scenario (or one with triggers) while its daemon runs, and removes it as soon as
    the scenario is deleted. It cannot when it no longer watches the namespace — kopf stops watching a namespace
    being deleted when it serves namespaces by pattern — and a namespace must never hang on our finalizer. The
    scenario holds nothing to clean up: its runs go with it (owner references).
    """
    released = []
    now = datetime.now(UTC)
    for kind in SCHEDULABLE:
        try:
            owners = await list_scoped(client, kind, namespaces)
        except ApiError as exc:
            if not exc.not_found:
                raise
            # Its CRD is not installed (an upgrade that has not applied crds/ yet): nothing of it to release, and
            # the sweep that follows must still run.
            log.warning("cannot list %s (%s): apply crds/ of this version", kind, exc.message)
            continue
        for scenario in owners:
            meta = scenario["metadata"]
            if stuck_on_our_finalizer(meta, now, grace) and await release_our_finalizer(client, kind, meta):
                released.append(f"{kind} {meta['namespace']}/{meta['name']}")
                log.warning("released deleted %s %s/%s", kind, meta["namespace"], meta["name"])
    return released
