"""Triggers: watch what ``spec.triggers`` of a ChaosScenario or ChaosWorkflow names, and start a run on each edge.

One ``OwnerTriggers`` per scenario or workflow with triggers (a kopf daemon, handlers/scenarios.py) runs one
``TriggerWatch`` task per trigger. A watch lists its objects (name or label selector, in one namespace), then
follows them with a watch from the list's resourceVersion, and lists again when the watch ends or its version
expires; nothing waits on the event loop. After every change it hands the UIDs that meet the conditions to
``OwnerTriggers.apply``, which decides (domain/triggers.py: edge, pause, cooldown, concurrency policy), creates
the runs, and writes ``status.triggers``.

Authorization: a trigger must not let a requester watch what they could not. Before it watches (and again at every
list) it asks, by SubjectAccessReview, whether the owner's requester may ``list`` and ``watch`` the resource in
that namespace, and whether the namespace may be targeted at all (protected, opted in; engine/targets.py). A
refused trigger does not watch: a Warning Event ``TriggerRefused`` and ``lastSkipped`` say why, and it asks again
when the spec changes and every ``RECHECK_SECONDS``. The runs it starts act with the owner's requester, whose
rights each run checks again before it changes anything (engine/run/admission.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from coordinator.adapters.kube import JSON, ApiError, KubeApi, resource_path
from coordinator.api.durations import parse_duration
from coordinator.api.models import GROUP, Phase
from coordinator.api.probes import K8sProbe
from coordinator.api.triggers import Trigger, Triggers
from coordinator.domain.admission import annotation_of, requester_in
from coordinator.domain.lifecycle import fires
from coordinator.domain.permissions import Need
from coordinator.domain.resources import CLUSTER_SCOPED_KINDS, group_of, plural
from coordinator.domain.samples import ProbeError, compare
from coordinator.domain.schedule import Action, label_value
from coordinator.domain.selection import SelectionError, label_selector_to_string
from coordinator.domain.timestamps import format_iso_seconds, parse_iso
from coordinator.domain.triggers import decide, new_edges, object_version, recorded, run_name, triggered_by
from coordinator.engine.authorization import refusals
from coordinator.engine.events import post_event
from coordinator.engine.scheduler import (
    OwnedRun,
    Scheduler,
    pause_of,
    requested_by,
    run_body,
    schedulable_of,
    scheduling_of,
)
from coordinator.engine.targets import NamespacePolicy
from coordinator.probes.k8s import collection_path, field_values, refusal
from coordinator.settings import Settings

log = logging.getLogger(__name__)

# On every triggered TestRun: which trigger of its owner started it, and (JSON) what triggered it.
TRIGGER_LABEL = f"{GROUP}/trigger"
TRIGGERED_BY_ANNOTATION = f"{GROUP}/triggered-by"
RETRY_START = 0.5  # seconds before the first retry of a failed list or watch; doubles up to RETRY_MAX
RETRY_MAX = 30.0
# A refused trigger, or one whose kind the operator may not read, asks again this often (and on a spec change).
RECHECK_SECONDS = 60.0
REFUSED = "refused: "  # how lastSkipped starts while a trigger may not watch


def meets(obj: Mapping[str, Any], trigger: Trigger) -> bool:
    """Whether ``obj`` meets every condition of ``trigger``, each compared as a k8s probe compares a field; an
    object being deleted, or one whose fields cannot be compared, does not."""
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        return False
    what = f"{trigger.resource.kind} {(obj.get('metadata') or {}).get('name')}"
    try:
        for condition in trigger.conditions:
            actual, expected = field_values(
                dict(obj), condition.fieldPath, condition.value, condition.valueFromPath, what
            )
            if not compare(actual, condition.operator, expected):
                return False
    except ProbeError:
        return False
    return True


def watched_namespace(trigger: Trigger, owner_namespace: str) -> str | None:
    """Where the trigger watches: its resource's namespace, else its owner's; None for a cluster-scoped kind."""
    if trigger.resource.kind in CLUSTER_SCOPED_KINDS:
        return None
    return trigger.resource.namespace or owner_namespace


def watch_needs(trigger: Trigger, owner_namespace: str) -> list[Need]:
    """The rights the owner's requester must hold for the trigger to watch: list and watch its resource there."""
    resource = trigger.resource
    namespace = watched_namespace(trigger, owner_namespace)
    return [
        Need(verb, group_of(resource.apiVersion), plural(resource.kind), "", namespace, f"trigger {trigger.name}")
        for verb in ("list", "watch")
    ]


async def trigger_refusal(
    client: KubeApi, settings: Settings, owner: Mapping[str, Any], trigger: Trigger
) -> str | None:
    """Why ``trigger`` of ``owner`` may not watch (None: it may): what no probe may read (Secrets, protected
    namespaces), a namespace chaos may not touch, or a right the owner's requester lacks."""
    meta = owner["metadata"]
    requester = requester_in(annotation_of(owner))
    if requester is None:
        return "no requester is recorded on it (the admission webhook records who changed its spec)"
    resource = trigger.resource
    probe = K8sProbe.model_construct(
        apiVersion=resource.apiVersion, kind=resource.kind, namespace=resource.namespace, name=resource.name
    )
    refused = refusal(probe, meta["namespace"], settings.protected)
    if refused is not None:
        return refused.reason
    namespace = watched_namespace(trigger, meta["namespace"])
    if namespace is not None:
        allowed, reason = await NamespacePolicy(client, settings)(namespace)
        if not allowed:
            return reason
    problems = await refusals(client, requester, watch_needs(trigger, meta["namespace"]))
    return "; ".join(problems) or None


@dataclass
class TriggerState:
    """What one trigger knows between two looks; ``status.triggers[]`` holds it across restarts."""

    name: str
    matching: frozenset[str] | None = None  # None: never looked at (what meets the conditions then fires nothing)
    last_fired: datetime | None = None
    last_run: str | None = None
    last_skipped: str | None = None
    fired: int = 0

    @classmethod
    def of(cls, name: str, status: Mapping[str, Any] | None) -> TriggerState:
        """From the trigger's entry in ``status.triggers`` (None: it has none)."""
        if status is None:
            return cls(name)
        matching = status.get("matching")
        fired_at = status.get("lastFiredAt")
        return cls(
            name=name,
            matching=frozenset(matching) if isinstance(matching, list) else None,
            last_fired=parse_iso(fired_at) if fired_at else None,
            last_run=status.get("lastRun"),
            last_skipped=status.get("lastSkipped"),
            fired=int(status.get("fired") or 0),
        )

    def to_status(self) -> dict[str, Any]:
        """Its ``status.triggers[]`` entry; without ``matching`` while it has not watched (refused, not yet)."""
        entry: dict[str, Any] = {"name": self.name, "fired": self.fired}
        if self.matching is not None:
            entry["matching"] = recorded(self.matching)
        if self.last_fired is not None:
            entry["lastFiredAt"] = format_iso_seconds(self.last_fired)
        if self.last_run is not None:
            entry["lastRun"] = self.last_run
        if self.last_skipped is not None:
            entry["lastSkipped"] = self.last_skipped
        return entry


def _describe(trigger: Trigger, obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"trigger {trigger.name}: {trigger.resource.kind} {where}{meta.get('name')}"


@dataclass
class OwnerTriggers:
    """The triggers of one ChaosScenario or ChaosWorkflow: their state, their runs and their status."""

    client: KubeApi
    settings: Settings
    owner: Mapping[str, Any]  # kopf's live view of the owner: always its latest spec and annotations
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    states: dict[str, TriggerState] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _written: list[dict[str, Any]] | None = None

    @property
    def kind(self) -> str:
        return schedulable_of(self.owner).kind

    @property
    def ref(self) -> str:
        meta = self.owner["metadata"]
        return f"{self.kind} {meta['namespace']}/{meta['name']}"

    def triggers(self) -> list[Trigger]:
        """The owner's triggers as its spec says now (none when the spec is malformed: the webhook and the CRD
        schema refuse such a spec, so this is a stored object from before either)."""
        spec = self.owner.get("spec") or {}
        if not fires(spec):
            return []  # an archived scenario's triggers stop, as its schedule does
        try:
            return Triggers.model_validate({"triggers": spec.get("triggers") or []}).triggers
        except ValidationError as exc:
            log.warning("%s: spec.triggers is malformed, nothing is watched: %s", self.ref, exc)
            return []

    def load(self, stored: Mapping[str, Any]) -> None:
        """Take each trigger's state from ``status.triggers`` of ``stored`` (a fresh read of the owner)."""
        entries = {e.get("name"): e for e in (stored.get("status") or {}).get("triggers") or [] if isinstance(e, dict)}
        names = [trigger.name for trigger in self.triggers()]
        self.states = {name: self.states.get(name) or TriggerState.of(name, entries.get(name)) for name in names}
        self._written = [e for e in entries.values() if e.get("name") in names] if entries else None

    async def write_status(self) -> None:
        """Write every trigger's state into ``status.triggers`` (in spec order), unless nothing changed."""
        entries = [self.states[t.name].to_status() for t in self.triggers() if t.name in self.states]
        if entries == self._written:
            return
        meta = self.owner["metadata"]
        try:
            await self.client.patch(
                resource_path(self.kind, meta["namespace"], meta["name"], "status"), {"status": {"triggers": entries}}
            )
        except ApiError as exc:
            if not exc.not_found:
                raise
        self._written = entries

    async def refuse(self, trigger: Trigger, reason: str) -> None:
        """Record that ``trigger`` may not watch: it forgets what it saw (it starts over, firing nothing for what
        meets the conditions then, once it may), says why, and posts a Warning Event when the reason is new."""
        async with self._lock:
            state = self.states.setdefault(trigger.name, TriggerState(trigger.name))
            message = f"{REFUSED}{reason}"
            news = state.last_skipped != message
            state.matching = None
            state.last_skipped = message
            await self.write_status()
        if news:
            log.warning("%s: trigger %s does not watch: %s", self.ref, trigger.name, reason)
            await post_event(self.client, self.owner, "TriggerRefused", f"trigger {trigger.name}: {reason}", "Warning")

    async def active_runs(self, trigger: Trigger) -> list[OwnedRun]:
        """The runs ``trigger`` started that have not finished (found by its label and the owner's UID)."""
        meta = self.owner["metadata"]
        selector = f"{schedulable_of(self.owner).label}={label_value(meta['name'])},{TRIGGER_LABEL}={trigger.name}"
        items = await self.client.list(resource_path("TestRun", meta["namespace"]), label_selector=selector)
        owned = [
            OwnedRun.of(item)
            for item in items
            if any(ref.get("uid") == meta["uid"] for ref in item["metadata"].get("ownerReferences") or [])
        ]
        return [run for run in owned if run.active]

    async def apply(self, trigger: Trigger, objects: Mapping[str, Mapping[str, Any]]) -> None:
        """Decide and act on what ``trigger`` sees now: ``objects`` by UID, all it watches."""
        meeting = {uid for uid, obj in objects.items() if meets(obj, trigger)}
        async with self._lock:
            state = self.states.setdefault(trigger.name, TriggerState(trigger.name))
            if state.last_skipped is not None and state.last_skipped.startswith(REFUSED):
                state.last_skipped = None  # it may watch now
            edges = new_edges(state.matching, meeting)
            active = await self.active_runs(trigger) if edges else []
            now = self.now()
            pause = pause_of(self.owner) if edges else None
            plan = decide(
                state.matching,
                meeting,
                now=now,
                last_fired=state.last_fired,
                cooldown=parse_duration(trigger.cooldown),
                policy=trigger.concurrencyPolicy,
                active=len(active),
                paused=pause.label if pause is not None else None,
            )
            fired = False
            for edge in plan.edges:
                obj = objects[edge.uid]
                if not edge.fires:
                    state.last_skipped = f"{_describe(trigger, obj)}: no run: {edge.skipped}"
                    reason, type_ = ("Skipped", "Warning") if pause is not None else ("TriggerSkipped", "Normal")
                    await post_event(self.client, self.owner, reason, state.last_skipped, type_)
                    continue
                if edge.action == Action.REPLACE:
                    await Scheduler(self.client, self.owner).abort(active)
                    active = []
                name = await self.create(trigger, obj, now, state.fired)
                active.append(OwnedRun(name, "", Phase.PENDING, None, "", {}))
                state.fired += 1
                state.last_fired = now
                state.last_run = name
                fired = True
                await post_event(
                    self.client, self.owner, "Triggered", f"{_describe(trigger, obj)}: created TestRun {name}"
                )
            state.matching = plan.matching
            await self.write_status()
        if fired:
            await self.prune()

    async def create(self, trigger: Trigger, obj: Mapping[str, Any], now: datetime, fired: int) -> str:
        """Create the run of one edge; one that exists (this edge, created before a lost status write) counts."""
        meta = self.owner["metadata"]
        body = run_body(self.owner, scheduling_of(self.owner.get("spec") or {}), now)
        uid = str((obj.get("metadata") or {}).get("uid"))
        name = run_name(meta["name"], trigger.name, uid, object_version(obj), fired)
        body["metadata"]["name"] = name
        body["metadata"]["labels"][TRIGGER_LABEL] = trigger.name
        body["metadata"]["annotations"] = {
            TRIGGERED_BY_ANNOTATION: triggered_by(trigger.name, obj, now),
            **requested_by(self.owner),
        }
        try:
            await self.client.create(resource_path("TestRun", meta["namespace"]), body)
        except ApiError as exc:
            if not exc.conflict:
                raise
            log.info("%s: TestRun %s exists already (created before a lost status write)", self.ref, name)
        return name

    async def prune(self) -> None:
        """Apply the owner's history limits to its runs, as the scheduler does (a triggered owner may have no
        schedule)."""
        scheduler = Scheduler(self.client, self.owner)
        try:
            await scheduler.prune(await scheduler.owned_runs(), scheduling_of(self.owner.get("spec") or {}))
        except (ApiError, ValidationError) as exc:
            log.warning("%s: old runs not pruned: %s", self.ref, exc)


class TriggerWatch:
    """Lists, then watches, what one trigger names; hands every change to its owner's ``apply``."""

    def __init__(self, owner: OwnerTriggers, trigger: Trigger) -> None:
        self.owner = owner
        self.trigger = trigger
        meta = owner.owner["metadata"]
        resource = trigger.resource
        self.path = collection_path(resource.apiVersion, resource.kind, watched_namespace(trigger, meta["namespace"]))
        self.selector_problem: str | None = None
        try:
            self.label_selector = label_selector_to_string(resource.labelSelector) if resource.labelSelector else ""
        except SelectionError as exc:  # the CRD schema lets through what only the parser refuses
            self.label_selector, self.selector_problem = "", f"resource.labelSelector: {exc}"
        self.field_selector = f"metadata.name={resource.name}" if resource.name else ""
        self.objects: dict[str, JSON] = {}

    async def run(self) -> None:
        """Until cancelled: check the rights, list, watch; again on expiry, after a backoff on errors."""
        backoff = RETRY_START
        while True:
            try:
                refused = self.selector_problem or await trigger_refusal(
                    self.owner.client, self.owner.settings, self.owner.owner, self.trigger
                )
            except ApiError as exc:
                log.warning(
                    "%s: trigger %s: rights not checked (%s); again in %.1fs",
                    self.owner.ref,
                    self.trigger.name,
                    exc,
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RETRY_MAX)
                continue
            if refused is not None:
                await self.owner.refuse(self.trigger, refused)
                await asyncio.sleep(RECHECK_SECONDS)
                continue
            try:
                await self.follow()
                backoff = RETRY_START
                continue
            except ApiError as exc:
                if exc.status in (403, 404):  # the operator may not read the kind, or no such kind: say so, slowly
                    await self.owner.refuse(self.trigger, self.unreadable(exc))
                    await asyncio.sleep(RECHECK_SECONDS)
                    continue
                log.warning("%s: trigger %s: watch failed (%s)", self.owner.ref, self.trigger.name, exc)
            except Exception:  # a bug must not end the watch for good: log it, and start over from a list
                log.exception("%s: trigger %s: watch failed", self.owner.ref, self.trigger.name)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RETRY_MAX)

    def unreadable(self, exc: ApiError) -> str:
        resource = self.trigger.resource
        if exc.status == 404:
            return f"the API server serves no {resource.kind} in {resource.apiVersion} ({exc.message})"
        return (
            f"the operator itself may not list and watch {plural(resource.kind)} ({exc.message}): its ClusterRole "
            "must grant them (manifests/base/clusterrole.yaml)"
        )

    async def follow(self) -> None:
        """One list and the watch from its resourceVersion, until the watch ends (timeout, expiry)."""
        client = self.owner.client
        params: dict[str, str | int] = {}
        if self.label_selector:
            params["labelSelector"] = self.label_selector
        if self.field_selector:
            params["fieldSelector"] = self.field_selector
        listed = await client.get(self.path, params=params)
        self.objects = {o["metadata"]["uid"]: o for o in listed.get("items") or []}
        await self.owner.apply(self.trigger, self.objects)
        version = str((listed.get("metadata") or {}).get("resourceVersion") or "") or None
        events = client.watch(
            self.path,
            resource_version=version,
            timeout_seconds=self.owner.settings.watch_server_timeout,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
        )
        async for event in events:
            kind = event.get("type")
            obj = event.get("object") or {}
            if kind == "ERROR":  # most often 410 Gone: the version expired; list again
                return
            uid = (obj.get("metadata") or {}).get("uid")
            if kind not in ("ADDED", "MODIFIED", "DELETED") or not uid:
                continue  # BOOKMARK
            if kind == "DELETED":
                self.objects.pop(uid, None)
            else:
                self.objects[uid] = obj
            await self.owner.apply(self.trigger, self.objects)


def _watched(owner: Mapping[str, Any]) -> str:
    """What restarts the watches when it changes: the triggers, whether they may fire (archived), and who the runs
    act for."""
    spec = owner.get("spec") or {}
    return json.dumps([spec.get("triggers"), fires(spec), annotation_of(owner)], sort_keys=True)


class TriggerFollower:
    """The watches of one owner's triggers, restarted (the rights checked again) whenever its triggers or its
    requester change. ``owner`` is kopf's live body: ``sync`` looks at it, each daemon tick."""

    def __init__(self, client: KubeApi, settings: Settings, owner: Mapping[str, Any]) -> None:
        self.triggers = OwnerTriggers(client, settings, owner)
        self._tasks: list[asyncio.Task[None]] = []
        self._key: str | None = None

    async def sync(self) -> bool:
        """Start the watches, or restart them if the triggers changed; False once the owner is gone."""
        owner = self.triggers.owner
        if _watched(owner) == self._key:
            return True
        await self.close()
        meta = owner["metadata"]
        stored = await self.triggers.client.get_or_none(
            resource_path(self.triggers.kind, meta["namespace"], meta["name"])
        )
        if stored is None or stored["metadata"].get("uid") != meta["uid"]:
            return False
        self.triggers.load(stored)
        await self.triggers.write_status()  # the entries of removed triggers go
        self._key = _watched(owner)
        self._tasks = [
            asyncio.create_task(TriggerWatch(self.triggers, trigger).run(), name=f"{self.triggers.ref} {trigger.name}")
            for trigger in self.triggers.triggers()
        ]
        return True

    async def close(self) -> None:
        """Stop every watch."""
        tasks, self._tasks, self._key = self._tasks, [], None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
