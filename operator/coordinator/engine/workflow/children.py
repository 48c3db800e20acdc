"""A workflow run's child TestRuns: their bodies, creating, listing and aborting them, and waking the parent.

Each child is named ``<parent>-<node>`` (``domain.workflow.child_name``), so creating it again after a restart is
a 409, never a second child. It is labelled with its parent and node, owned by the parent (deleting the parent
deletes it; its own finalizer reverts its faults first), and carries the parent's requester: the admission webhook
copies it from the controlling TestRun and never takes it from the request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from coordinator.adapters.kube import CONNECTIONS, ApiError, KubeApi, resource_path
from coordinator.api.models import (
    API_VERSION,
    GROUP,
    REQUESTED_BY_ANNOTATION,
    WORKFLOW_NODE_LABEL,
    WORKFLOW_RUN_LABEL,
)
from coordinator.domain.schedule import label_value
from coordinator.domain.workflow import child_name

# Children created at once: a 100-node fan-out goes out in a few round trips, without 100 requests in flight, and
# half the client's connections stay free for everything else the process does meanwhile.
CREATE_CONCURRENCY = CONNECTIONS // 2


class Wakeups:
    """What changed among the children of the workflow runs this process drives, fed by the kopf event handler on
    labelled TestRuns: each change wakes its parent and hands it the child as the watch saw it, so a parent of
    100 busy children reacts within milliseconds without listing them all on every change."""

    def __init__(self) -> None:
        self._events: dict[tuple[str, str], asyncio.Event] = {}
        self._changed: dict[tuple[str, str], dict[str, Mapping[str, Any] | None]] = {}

    def wake(
        self, namespace: str, parent_label: str, child: Mapping[str, Any] | None = None, gone: bool = False
    ) -> None:
        """A child of (``namespace``, ``parent_label``) changed (``gone``: it was deleted). Ignored unless a
        workflow run of this process waits on that parent."""
        key = (namespace, parent_label)
        event = self._events.get(key)
        if event is None:
            return
        if child is not None:
            self._changed.setdefault(key, {})[child["metadata"]["name"]] = None if gone else child
        event.set()

    def take(self, namespace: str, parent_label: str) -> dict[str, Mapping[str, Any] | None]:
        """The children changed since the last call, by name (None: deleted)."""
        return self._changed.pop((namespace, parent_label), {})

    async def wait(self, namespace: str, parent_label: str, within: float) -> bool:
        """Wait until woken or ``within`` seconds pass; True when woken."""
        event = self._events.setdefault((namespace, parent_label), asyncio.Event())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await event.wait()
        woken = event.is_set()
        event.clear()
        return woken

    def follow(self, namespace: str, parent_label: str) -> None:
        """Start keeping the changes of this parent's children (before its first full read of them)."""
        self._events.setdefault((namespace, parent_label), asyncio.Event())

    def forget(self, namespace: str, parent_label: str) -> None:
        self._events.pop((namespace, parent_label), None)
        self._changed.pop((namespace, parent_label), None)


def newer(candidate: Mapping[str, Any], known: Mapping[str, Any] | None) -> bool:
    """Whether ``candidate`` is a later version of the object than ``known`` (resourceVersions compared as numbers
    when both are, as etcd revisions are; otherwise the candidate wins)."""
    if known is None:
        return True
    ours = str(candidate["metadata"].get("resourceVersion") or "")
    theirs = str(known["metadata"].get("resourceVersion") or "")
    if ours.isdigit() and theirs.isdigit():
        return int(ours) >= int(theirs)
    return True


WAKEUPS = Wakeups()


def child_body(parent: Mapping[str, Any], node: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """The child TestRun of ``node`` of the workflow run ``parent`` (its metadata as stored)."""
    meta = parent["metadata"]
    # The parent's own labels too, so a sharded operator (--selector) runs the children where it runs the parent;
    # not our group's labels: a child is not a scheduled run of the parent's scenario or workflow.
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if not k.startswith(f"{GROUP}/")}
    annotations = {}
    requested_by = (meta.get("annotations") or {}).get(REQUESTED_BY_ANNOTATION)
    if requested_by is not None:
        annotations[REQUESTED_BY_ANNOTATION] = requested_by
    return {
        "apiVersion": API_VERSION,
        "kind": "TestRun",
        "metadata": {
            "name": child_name(meta["name"], node),
            "namespace": meta["namespace"],
            "labels": {**labels, WORKFLOW_RUN_LABEL: label_value(meta["name"]), WORKFLOW_NODE_LABEL: node},
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "TestRun",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": dict(spec),
    }


def _owned_by(body: Mapping[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid and ref.get("controller") for ref in body["metadata"].get("ownerReferences") or [])


class Children:
    """The child TestRuns of one workflow run, as the API server holds them."""

    def __init__(self, client: KubeApi, namespace: str, parent: str, uid: str) -> None:
        self.client = client
        self.namespace = namespace
        self.parent = parent
        self.uid = uid
        self.label = label_value(parent)

    async def by_node(self) -> dict[str, Mapping[str, Any]]:
        """The children by node name (only those this run owns: a same-named parent of the past owns none)."""
        items = await self.client.list(
            resource_path("TestRun", self.namespace), label_selector=f"{WORKFLOW_RUN_LABEL}={self.label}"
        )
        children: dict[str, Mapping[str, Any]] = {}
        for item in items:
            node = self.node_of(item)
            if node is not None:
                children[node] = item
        return children

    def node_of(self, child: Mapping[str, Any]) -> str | None:
        """The node ``child`` runs, if it is a child of this run."""
        node = (child["metadata"].get("labels") or {}).get(WORKFLOW_NODE_LABEL)
        return node if node and _owned_by(child, self.uid) else None

    def apply_changes(
        self, seen: dict[str, Mapping[str, Any]], changes: Mapping[str, Mapping[str, Any] | None]
    ) -> None:
        """Bring ``seen`` (children by node) up to date with changes the watch reported (by child name)."""
        for name, child in changes.items():
            if child is None:
                for gone, known in list(seen.items()):
                    if known["metadata"]["name"] == name:
                        del seen[gone]
                continue
            node = self.node_of(child)
            if node is not None and newer(child, seen.get(node)):
                seen[node] = child

    async def create(self, bodies: list[dict[str, Any]]) -> list[Mapping[str, Any]]:
        """Create the children (an existing one counts as created: an earlier attempt made it); returns those
        this call created, as stored."""
        gate = asyncio.Semaphore(CREATE_CONCURRENCY)

        async def one(body: dict[str, Any]) -> Mapping[str, Any] | None:
            async with gate:
                try:
                    return await self.client.create(resource_path("TestRun", self.namespace), body)
                except ApiError as exc:
                    if not exc.conflict:
                        raise
                    return None

        return [child for child in await asyncio.gather(*(one(body) for body in bodies)) if child is not None]

    async def abort(self, names: list[str]) -> None:
        """Ask the children to stop (spec.abort: each reverts everything and ends Cancelled)."""
        for name in names:
            try:
                await self.client.patch(resource_path("TestRun", self.namespace, name), {"spec": {"abort": True}})
            except ApiError as exc:
                if not exc.not_found:
                    raise

    async def delete_all(self) -> int:
        """Delete every child (the parent is being deleted); each reverts what it holds before it goes."""
        count = 0
        for child in (await self.by_node()).values():
            try:
                await self.client.delete(resource_path("TestRun", self.namespace, child["metadata"]["name"]))
                count += 1
            except ApiError as exc:
                if not exc.not_found:
                    raise
        return count
