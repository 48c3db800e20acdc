"""The emergency stop: namespaces labelled ``chaos.coordinator.dev/paused=true``, known in memory to every run.

A paused namespace stops every run that touches it (its own namespace, its scenario's, a target namespace): an
active run ends Cancelled with reason Paused, every change reverted; a new run waits Pending (reason Paused)
until the label goes. The label on the operator's own namespace pauses the whole cluster, and is the only pause
that covers nodes.

Runs ask ``PAUSES`` at each of their checks (``RunState.check_stop``, every poll interval), which costs no
request: one ``PauseFollower`` per operator keeps the board current. With the namespaces discovered (all of
them, or patterns) it lists and watches the labelled namespaces, so a label reaches the board within
milliseconds. An exact namespace list (the single-namespace install) may not list namespaces at all: it reads
each watched namespace, and its own, with ``get`` every ``POLL_INTERVAL`` seconds. Either way the first read
finishes before kopf starts (a startup handler), so a run created while paused waits from the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from coordinator.adapters.kube import ApiError, KubeApi, resource_path
from coordinator.api.models import PAUSED_LABEL, Target, TargetKind
from coordinator.domain.pauses import PauseScope, done_message, label_patch
from coordinator.settings import Settings

log = logging.getLogger(__name__)

PAUSED_SELECTOR = f"{PAUSED_LABEL}=true"
POLL_INTERVAL = 1.0  # seconds between the reads of an exact namespace list's labels
RETRY_START = 0.5  # seconds before the first retry of a failed read or watch; doubles up to RETRY_MAX
RETRY_MAX = 10.0


def is_paused(labels: Mapping[str, str] | None) -> bool:
    """Whether a namespace with these labels is paused (only the value ``true`` pauses)."""
    return (labels or {}).get(PAUSED_LABEL) == "true"


def run_scope(run_namespace: str, scenario_namespace: str, target: Target | None) -> frozenset[str]:
    """The namespaces a run touches: its own, its scenario's and its target namespaces (an empty list means the
    scenario's). Node targets are in no namespace: only the cluster-wide pause covers them."""
    scope = {run_namespace, scenario_namespace}
    if target is not None and target.kind != TargetKind.NODE:
        scope.update(target.namespaces or [scenario_namespace])
    return frozenset(scope)


@dataclass(frozen=True)
class Pause:
    """Why a run may not go on: the paused namespace, and whether it is the operator's own (cluster-wide)."""

    namespace: str
    cluster_wide: bool

    @property
    def label(self) -> str:
        what = "the operator's namespace" if self.cluster_wide else "namespace"
        return f"{what} {self.namespace} carries the label {PAUSED_SELECTOR}"

    def waiting_message(self) -> str:
        """The message of a run that waits (Pending, reason Paused)."""
        resume = "coordinator resume" + ("" if self.cluster_wide else f" --namespace {self.namespace}")
        scope = "paused cluster-wide" if self.cluster_wide else "paused"
        return f"{scope}: {self.label}; the run starts once it is removed ({resume})"

    def ending_message(self) -> str:
        """The message of a run the pause ended (Cancelled, reason Paused)."""
        scope = "paused cluster-wide" if self.cluster_wide else "paused"
        return f"{scope}: {self.label}; every fault was reverted"


class PauseBoard:
    """Which namespaces are paused, as last read; ``cluster_namespace`` is the operator's own."""

    def __init__(self) -> None:
        self.cluster_namespace: str | None = None
        self._paused: frozenset[str] = frozenset()

    @property
    def paused(self) -> frozenset[str]:
        return self._paused

    def reset(self, cluster_namespace: str | None, paused: Iterable[str]) -> None:
        """Start over with what a full read found."""
        self.cluster_namespace = cluster_namespace
        self._replace(frozenset(paused))

    def set(self, namespace: str, paused: bool) -> None:
        """One namespace's label, as a watch event or a read says."""
        self._replace(self._paused | {namespace} if paused else self._paused - {namespace})

    def _replace(self, paused: frozenset[str]) -> None:
        for name in sorted(paused - self._paused):
            log.warning("namespace %s is paused (%s): runs that touch it are stopped and reverted", name, PAUSED_LABEL)
        for name in sorted(self._paused - paused):
            log.warning("namespace %s is no longer paused: its runs may start", name)
        self._paused = paused

    def pausing(self, scope: Iterable[str]) -> Pause | None:
        """The pause that stops a run touching ``scope``, the cluster-wide one first; None if none does."""
        if not self._paused:
            return None
        if self.cluster_namespace is not None and self.cluster_namespace in self._paused:
            return Pause(self.cluster_namespace, cluster_wide=True)
        hit = sorted(set(scope) & self._paused)
        return Pause(hit[0], cluster_wide=False) if hit else None


# The operator's board: fed by its PauseFollower, read by every run (empty, pausing nothing, without a follower).
PAUSES = PauseBoard()


def polled_namespaces(settings: Settings) -> list[str] | None:
    """The namespaces whose labels are read one by one (an exact namespace list, and the operator's own), or None
    when the operator may list and watch namespaces (it watches all of them, or patterns)."""
    if not settings.watched or settings.watches_patterns:
        return None
    return sorted({*settings.watched, settings.namespace})


class PauseFollower:
    """Keeps a ``PauseBoard`` current: a watch of the labelled namespaces, or reads of a fixed list."""

    def __init__(self, client: KubeApi, settings: Settings, board: PauseBoard = PAUSES) -> None:
        self.client = client
        self.settings = settings
        self.board = board
        self.polled = polled_namespaces(settings)
        self._task: asyncio.Task[None] | None = None
        self._refused: set[str] = set()

    async def start(self) -> None:
        """Read the labels (retrying until the API server answers), then follow them in a task."""
        backoff = RETRY_START
        while True:
            try:
                version = await self.read()
                break
            except Exception as exc:  # no run may start before the labels are known: try again
                log.warning("could not read the paused namespaces (%s); trying again in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RETRY_MAX)
        self._task = asyncio.create_task(self._follow(version), name="paused namespaces")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def read(self) -> str | None:
        """Read every label now and reset the board; the resourceVersion to watch from (None when polling)."""
        if self.polled is not None:
            self.board.reset(self.settings.namespace, [name for name in self.polled if await self._get(name)])
            return None
        listed = await self.client.get(resource_path("Namespace"), params={"labelSelector": PAUSED_SELECTOR})
        names = [obj["metadata"]["name"] for obj in listed.get("items") or []]
        self.board.reset(self.settings.namespace, names)
        return str((listed.get("metadata") or {}).get("resourceVersion") or "") or None

    async def _get(self, name: str) -> bool:
        """Whether namespace ``name`` is paused; False when it does not exist or may not be read (said once)."""
        try:
            obj = await self.client.get(resource_path("Namespace", name=name))
        except ApiError as exc:
            if exc.status == 403 and name not in self._refused:
                self._refused.add(name)
                log.warning("may not read namespace %s: its pause label cannot be seen (%s)", name, exc.message)
            if exc.status in (403, 404):
                return False
            raise
        return is_paused((obj.get("metadata") or {}).get("labels"))

    async def _follow(self, version: str | None) -> None:
        backoff = RETRY_START
        while True:
            try:
                if self.polled is not None:
                    await asyncio.sleep(POLL_INTERVAL)
                    await self.read()
                else:
                    if version is None:
                        version = await self.read()
                    await self._watch(version)
                    version = None  # the watch ended (timeout, or its version expired): list again
                backoff = RETRY_START
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("following the paused namespaces failed (%s); again in %.1fs", exc, backoff)
                version = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RETRY_MAX)

    async def _watch(self, version: str | None) -> None:
        events = self.client.watch(
            resource_path("Namespace"),
            resource_version=version,
            timeout_seconds=self.settings.watch_server_timeout,
            label_selector=PAUSED_SELECTOR,
        )
        async for event in events:
            if apply_event(self.board, event) == "ERROR":
                return


def apply_event(board: PauseBoard, event: Mapping[str, Any]) -> str:
    """Put a watch event of the labelled namespaces on the board; returns its type. A namespace whose label is
    removed (or changed) leaves the selector: the watch says DELETED."""
    kind = str(event.get("type"))
    obj = event.get("object") or {}
    name = (obj.get("metadata") or {}).get("name")
    if kind in ("ADDED", "MODIFIED") and name:
        board.set(name, is_paused(obj["metadata"].get("labels")))
    elif kind == "DELETED" and name:
        board.set(name, False)
    return kind


async def set_paused(client: KubeApi, scope: PauseScope, paused: bool) -> str:
    """Set or clear the pause label on the scope's namespace with ``client`` (the person's own rights: the CLI's
    kubeconfig, the dashboard's viewer); returns what was done. Raises ApiError (404, 403...)."""
    path = resource_path("Namespace", name=scope.namespace)
    current = await client.get(path)
    was_paused = is_paused((current.get("metadata") or {}).get("labels"))
    if was_paused != paused:
        await client.patch(path, label_patch(paused))
    return done_message(scope, paused, was_paused)
