"""The safety net: find every object carrying a fault record whose run is finished, gone or expired, and revert it.

Runs at operator start-up (the crash-recovery path: a previous process may have died mid-run) and then
periodically. A record belongs to an active run when that TestRun still exists with the same UID and a
non-terminal phase; the run's own executor is responsible for those.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from coordinator.adapters.kube import CLUSTER_SCOPED, JSON, ApiError, KubeApi, resource_path
from coordinator.api.models import FINALIZER, TERMINAL_PHASES, FaultType, Injection, InjectionState, TargetRef
from coordinator.domain.timestamps import now_iso, parse_iso
from coordinator.engine.run import RetryLater, revert_run
from coordinator.faults import driver_for
from coordinator.faults.base import ANNOTATION_PREFIX, INJECTED_LABEL, clear_on_target, parsed_records
from coordinator.settings import Settings, uses_patterns

log = logging.getLogger(__name__)

SWEPT_KINDS = ("Pod", "Deployment", "StatefulSet", "DaemonSet", "Node", "NetworkPolicy")


def sweep_scope(settings: Settings) -> list[str] | None:
    """What the sweeps may touch: the watched namespaces (exact names, or kopf's glob patterns), or None for the
    whole cluster (nothing watched). Another operator instance, watching other namespaces with a history store of
    its own, must never release or revert what is this one's to do (and the other way round)."""
    return settings.watched or None


def namespace_in(namespace: str, patterns: Sequence[str]) -> bool:
    """Whether ``namespace`` is among ``patterns``, as kopf reads them: exact names or globs, and ``!glob`` to
    exclude (a list of exclusions only means everything else)."""
    included = [p for p in patterns if not p.startswith("!")]
    excluded = [p[1:] for p in patterns if p.startswith("!")]
    if any(fnmatch.fnmatchcase(namespace, p) for p in excluded):
        return False
    return not included or any(fnmatch.fnmatchcase(namespace, p) for p in included)


async def list_scoped(
    client: KubeApi, kind: str, namespaces: Sequence[str] | None, label_selector: str | None = None
) -> list[JSON]:
    """List ``kind`` cluster-wide, or in ``namespaces`` (each exact name in turn; for glob patterns, a cluster-wide
    list kept to the matching namespaces). In namespaced mode a cluster-scoped kind the operator may not read
    (nodes, in a single-namespace install) is skipped rather than failing the sweep."""
    if namespaces is None:
        return await client.list(resource_path(kind), label_selector=label_selector)
    if kind in CLUSTER_SCOPED:
        try:
            return await client.list(resource_path(kind), label_selector=label_selector)
        except ApiError as exc:
            if exc.status == 403:
                return []
            raise
    if uses_patterns(list(namespaces)):
        listed = await client.list(resource_path(kind), label_selector=label_selector)
        return [item for item in listed if namespace_in(item["metadata"].get("namespace", ""), namespaces)]
    items: list[JSON] = []
    for namespace in namespaces:
        items += await client.list(resource_path(kind, namespace), label_selector=label_selector)
    return items


@dataclass(frozen=True)
class Orphan:
    target: TargetRef
    key: str
    run: str
    injection: Injection


KNOWN_FAULTS = frozenset(str(f) for f in FaultType)


def records_of(kind: str, obj: JSON) -> list[tuple[str, dict[str, str]]]:
    """The (annotation key, record) pairs on an object that this operator can act on.

    A record that is not ours to read (not JSON, missing fields, a fault type this version does not know) is
    logged and skipped: one bad annotation must never stop the sweep for everything else.
    """
    out = []
    for key, record in parsed_records(obj):
        valid = (
            isinstance(record, dict)
            and all(isinstance(record.get(f), str) for f in ("run", "runUid", "fault"))
            and record["fault"] in KNOWN_FAULTS
            and record["run"].count("/") == 1
            and all(record["run"].split("/"))
        )
        if not valid:
            log.warning("skipping unreadable fault record %s on %s %s", key, kind, obj["metadata"].get("name"))
            continue
        out.append((key, record))
    return out


async def _run_is_active(client: KubeApi, run_ref: str, run_uid: str, cache: dict[str, bool]) -> bool:
    if run_uid not in cache:
        namespace, name = run_ref.split("/", 1)
        try:
            run = await client.get(resource_path("TestRun", namespace, name))
        except ApiError as exc:
            if not exc.not_found:
                raise
            cache[run_uid] = False
        else:
            same = run["metadata"]["uid"] == run_uid
            phase = (run.get("status") or {}).get("phase")
            cache[run_uid] = same and phase not in TERMINAL_PHASES and not run["metadata"].get("deletionTimestamp")
    return cache[run_uid]


async def find_orphans(client: KubeApi, namespaces: Sequence[str] | None = None) -> list[Orphan]:
    orphans: list[Orphan] = []
    active: dict[str, bool] = {}
    for kind in SWEPT_KINDS:
        for obj in await list_scoped(client, kind, namespaces, label_selector=INJECTED_LABEL):
            meta = obj["metadata"]
            for key, record in records_of(kind, obj):
                if await _run_is_active(client, record["run"], record["runUid"], active):
                    continue
                target = TargetRef(kind=kind, namespace=meta.get("namespace"), name=meta["name"], uid=meta.get("uid"))
                injection = Injection(
                    id=record.get("id", key),
                    step=0,
                    fault=FaultType(record["fault"]),
                    target=target,
                    state=InjectionState.APPLIED,
                    original=record.get("original"),
                )
                orphans.append(Orphan(target=target, key=key, run=record.get("run", "?"), injection=injection))
    return orphans


def stuck_on_our_finalizer(meta: JSON, now: datetime, grace: float) -> bool:
    """Whether an object's deletion has waited on our finalizer for more than ``grace`` seconds."""
    deleted_at = meta.get("deletionTimestamp")
    if not deleted_at or FINALIZER not in (meta.get("finalizers") or []):
        return False
    return (now - parse_iso(deleted_at)).total_seconds() >= grace


async def release_our_finalizer(client: KubeApi, kind: str, meta: JSON) -> bool:
    """Drop our finalizer (only if the object is unchanged since read); False when it changed or is gone."""
    remaining = [f for f in meta.get("finalizers") or [] if f != FINALIZER]
    try:
        await client.patch(
            resource_path(kind, meta["namespace"], meta["name"]),
            {"metadata": {"finalizers": remaining, "resourceVersion": meta["resourceVersion"]}},
        )
    except ApiError as exc:
        if not (exc.not_found or exc.conflict):
            raise
        return False
    return True


async def release_stuck_deletions(
    client: KubeApi,
    settings: Settings,
    grace: float = 10.0,
    namespaces: Sequence[str] | None = None,
    may_release: Callable[[JSON], Awaitable[bool]] | None = None,
) -> list[str]:
    """Revert and release TestRuns whose deletion has waited on our finalizer for more than ``grace`` seconds.

    Normally the deletion handler does this at once. It cannot when nobody watches the TestRun any more — kopf
    stops watching a namespace that is being deleted when it serves namespaces by pattern — and a namespace must
    never hang on our finalizer for ever. ``may_release`` keeps a finished run that has not reached the history
    yet, up to its own bound (history/mirror.py ``DeletedRunGate``, which writes it when it can).
    """
    released = []
    now = parse_iso(now_iso())
    for run in await list_scoped(client, "TestRun", namespaces):
        meta = run["metadata"]
        if not stuck_on_our_finalizer(meta, now, grace):
            continue
        if may_release is not None and not await may_release(run):
            continue
        try:
            await revert_run(client, settings, run)
        except RetryLater as exc:
            log.error("TestRun %s/%s: cannot revert yet: %s", meta["namespace"], meta["name"], exc)
            continue
        if await release_our_finalizer(client, "TestRun", meta):
            released.append(f"{meta['namespace']}/{meta['name']}")
            log.warning("released deleted TestRun %s/%s after reverting it", meta["namespace"], meta["name"])
    return released


async def stale_record_copies(client: KubeApi, namespaces: Sequence[str] | None = None) -> int:
    """Remove record annotations from ReplicaSets whose Deployment no longer carries them; returns how many.

    The Deployment controller copies a Deployment's annotations onto its ReplicaSets and never removes them. A
    revert clears the copies right after the Deployment (faults/base.py, clear_on_replicasets); an operator that
    stopped between the two leaves a copy that no label marks, and only this pass finds it.
    """
    removed = 0
    deployments: dict[tuple[str, str], set[str] | None] = {}
    for rs in await list_scoped(client, "ReplicaSet", namespaces):
        meta = rs.get("metadata", {})
        keys = [k for k in meta.get("annotations") or {} if k.startswith(ANNOTATION_PREFIX)]
        owner = next((r for r in meta.get("ownerReferences") or [] if r.get("kind") == "Deployment"), None)
        if not keys or owner is None:
            continue
        where = (meta["namespace"], owner["name"])
        if where not in deployments:
            deployment = await client.get_or_none(resource_path("Deployment", *where))
            same = deployment is not None and deployment["metadata"].get("uid") == owner.get("uid")
            deployments[where] = set((deployment or {}).get("metadata", {}).get("annotations") or {}) if same else None
        kept = deployments[where]
        stale = [k for k in keys if kept is None or k not in kept]
        if not stale:
            continue
        try:
            await client.patch(
                resource_path("ReplicaSet", meta["namespace"], meta["name"]),
                {"metadata": {"annotations": dict.fromkeys(stale)}},
            )
        except ApiError as exc:
            if not exc.not_found:
                raise
            continue
        removed += len(stale)
        log.info("removed %d stale fault record copies from ReplicaSet %s/%s", len(stale), where[0], meta["name"])
    return removed


async def sweep(client: KubeApi, namespaces: Sequence[str] | None = None) -> list[Orphan]:
    """Revert every orphaned fault record (cluster-wide, or in ``namespaces``); returns what was reverted.
    Failures are logged and retried next sweep. Then remove the copies of records left on ReplicaSets."""
    reverted = []
    for orphan in await find_orphans(client, namespaces):
        driver = driver_for(orphan.injection.fault)
        try:
            await driver.revert(client, orphan.injection)
            if not driver.creates_object(orphan.injection):
                await clear_on_target(client, orphan.target, orphan.key)
        except ApiError as exc:
            log.error(
                "could not revert orphaned %s on %s %s: %s",
                orphan.injection.fault,
                orphan.target.kind,
                orphan.target.name,
                exc,
            )
            continue
        log.warning(
            "reverted orphaned %s on %s %s/%s (run %s is finished or gone)",
            orphan.injection.fault,
            orphan.target.kind,
            orphan.target.namespace or "",
            orphan.target.name,
            orphan.run,
        )
        reverted.append(orphan)
    try:
        await stale_record_copies(client, namespaces)
    except ApiError as exc:
        log.warning("could not check ReplicaSets for stale fault record copies: %s", exc)
    return reverted
