"""What the kopf handlers call: translate between kopf's world (flags, retries) and the engine's."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf

from coordinator.adapters.kube import ApiError, KubeApi, resource_path
from coordinator.api.models import FINALIZER
from coordinator.domain.timestamps import parse_iso
from coordinator.engine.locks import TargetLocks
from coordinator.engine.run import (
    Mirror,
    RetryLater,
    RunHandle,
    RunInterrupted,
    RunMachine,
    Waiting,
    abort_requested,
    revert_run,
)
from coordinator.engine.workflow import Children, WorkflowMachine
from coordinator.settings import Settings

log = logging.getLogger(__name__)

DELETE_RETRIES = 8
TARGET_WAIT_RETRY = 2.0  # seconds between attempts of a run waiting for its target lock
RETRY_BACKOFF_START = 1.0  # seconds before the first retry after a transient failure; doubles up to the maximum
RETRY_BACKOFF_MAX = 30.0
FINALIZER_WAIT = 5.0  # seconds the daemon polls fast for kopf's finalizer patch, before it polls slower
FINALIZER_POLL = 0.01
FINALIZER_SLOW_POLL = 0.5  # after FINALIZER_WAIT

# One lock per TestRun: the deletion handler never reverts while the run's daemon is still applying.
_locks: dict[str, asyncio.Lock] = {}


def _lock(uid: str) -> asyncio.Lock:
    return _locks.setdefault(uid, asyncio.Lock())


def _has_finalizer(body: Mapping[str, Any]) -> bool:
    return FINALIZER in (body["metadata"].get("finalizers") or [])


@dataclass(eq=False)
class _Waiter:
    body: Mapping[str, Any]
    stopped: kopf.DaemonStopped
    woken: asyncio.Event = field(default_factory=asyncio.Event)


class FinalizerWaits:
    """Every daemon waiting for kopf's finalizer patch to show in its live body, looked at by one polling loop.

    A burst of 100 new TestRuns is 100 daemons waiting at once, each for most of a second. Polling each body in
    its own task every ``poll`` seconds was 10,000 task wake-ups a second on the event loop that also has to
    process those runs' watch events and requests; one loop over the waiting bodies costs a dictionary lookup
    per body instead, with the same reaction time.
    """

    def __init__(self, poll: float = FINALIZER_POLL) -> None:
        self.poll = poll
        self._waiting: set[_Waiter] = set()
        self._poller: asyncio.Task[None] | None = None

    async def wait(self, body: Mapping[str, Any], stopped: kopf.DaemonStopped, within: float) -> bool:
        """True once the finalizer is in ``body``; False when the daemon stops or ``within`` seconds pass first."""
        if _has_finalizer(body):
            return True
        waiter = _Waiter(body, stopped)
        self._waiting.add(waiter)
        loop = asyncio.get_running_loop()
        if self._poller is None or self._poller.done() or self._poller.get_loop() is not loop:
            self._poller = loop.create_task(self._poll())
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within):
                    await waiter.woken.wait()
        finally:
            self._waiting.discard(waiter)
        return _has_finalizer(body) and not stopped

    async def _poll(self) -> None:
        while self._waiting:
            await asyncio.sleep(self.poll)
            for waiter in list(self._waiting):
                if waiter.stopped or _has_finalizer(waiter.body):
                    waiter.woken.set()


_finalizer_waits = FinalizerWaits()


async def wait_for_finalizer(
    body: Mapping[str, Any], stopped: kopf.DaemonStopped, within: float = FINALIZER_WAIT
) -> bool:
    """Return True once our finalizer is on the TestRun (nothing is injected before it is), False when the daemon
    stops first.

    kopf spawns the daemon in the same processing cycle in which it sends the finalizer patch, so the first call
    nearly always comes a few milliseconds too early. ``body`` is kopf's live view of the object: wait for the
    patch to show there, polling fast for ``within`` seconds (a kopf retry would cost its whole delay, most of a
    run's injection latency; the fast polling is shared by every waiting daemon, ``FinalizerWaits``), then
    slower, saying so once at INFO. A kopf retry was logged as an ERROR for what is only a wait.
    """
    if await _finalizer_waits.wait(body, stopped, within):
        return True
    said = False
    while not _has_finalizer(body):
        if stopped:
            return False
        if not said:
            said = True
            meta = body["metadata"]
            log.info(
                "TestRun %s/%s: waiting for the finalizer before injecting anything",
                meta.get("namespace"),
                meta.get("name"),
            )
        await stopped.wait(FINALIZER_SLOW_POLL)
    return True


async def handle_execute_testrun(
    client: KubeApi,
    settings: Settings,
    body: Mapping[str, Any],
    stopped: kopf.DaemonStopped,
    locks: TargetLocks | None = None,
    mirror: Mirror | None = None,
) -> None:
    """Run (or resume) a TestRun until it ends, the operator stops, or the TestRun is deleted.

    A run waiting for a target lock waits here, in its daemon, rather than through a kopf retry: kopf logs every
    retry as an ERROR (and posts it as a Warning Event), and a queue is nothing a person must act on. It is
    logged at INFO when the reason for waiting changes; the TestRun's status says why it waits.
    """
    if not await wait_for_finalizer(body, stopped):
        return
    ref = f"{body['metadata']['namespace']}/{body['metadata']['name']}"
    said = ""
    backoff = RETRY_BACKOFF_START
    while True:
        try:
            await _execute_once(client, settings, body, stopped, locks, mirror)
            return
        except Waiting as exc:
            if str(exc) != said:
                said = str(exc)
                log.info("TestRun %s: %s", ref, said)
            delay = TARGET_WAIT_RETRY
        except (RetryLater, ApiError) as exc:
            # A transient failure (API server away, a revert to try again): retried with backoff, logged when
            # the failure changes, not on every attempt.
            text = f"Kubernetes API: {exc}" if isinstance(exc, ApiError) else str(exc)
            if text != said:
                said = text
                log.warning("TestRun %s: retrying in %.0fs: %s", ref, backoff, text)
            delay, backoff = backoff, min(backoff * 2, RETRY_BACKOFF_MAX)
        # Outside the run's lock: its deletion can revert meanwhile. An abort or the deadline cuts the wait short:
        # the next attempt checks both before anything that failed can fail again.
        if await _pause(body, stopped, delay, settings.poll_interval):
            return


async def _pause(body: Mapping[str, Any], stopped: kopf.DaemonStopped, delay: float, poll: float) -> bool:
    """Wait ``delay`` seconds, less when the run is aborted or its deadline passes; True when the daemon stops."""
    deadline = time.monotonic() + delay
    while (left := deadline - time.monotonic()) > 0:
        if await stopped.wait(min(left, poll)):
            return True
        if abort_requested(body) or _deadline_passed(body):
            return False
    return False


def _deadline_passed(body: Mapping[str, Any]) -> bool:
    deadline = (body.get("status") or {}).get("deadline")
    return bool(deadline) and datetime.now(UTC) >= parse_iso(str(deadline))


async def _execute_once(
    client: KubeApi,
    settings: Settings,
    body: Mapping[str, Any],
    stopped: kopf.DaemonStopped,
    locks: TargetLocks | None,
    mirror: Mirror | None,
) -> None:
    uid = body["metadata"]["uid"]
    async with _lock(uid):
        # kopf's body can lag behind our own status writes; a resumed run must start from what is stored.
        stored = await client.get_or_none(
            resource_path("TestRun", body["metadata"]["namespace"], body["metadata"]["name"])
        )
        if stored is None or stored["metadata"]["uid"] != uid:
            return
        handle = RunHandle(body=body, stopped=lambda: bool(stopped))
        machine: RunMachine | WorkflowMachine
        if (stored.get("spec") or {}).get("workflowRef"):
            machine = WorkflowMachine(client, settings, handle, stored=stored, mirror=mirror)
        else:
            machine = RunMachine(client, settings, handle, stored=stored, locks=locks, mirror=mirror)
        try:
            await machine.execute()
        except RunInterrupted:
            return
    _locks.pop(uid, None)


async def handle_delete_testrun(
    client: KubeApi, settings: Settings, body: Mapping[str, Any], retry: int, logger: logging.Logger
) -> None:
    """Revert whatever the deleted TestRun still holds before its finalizer goes.

    After ``DELETE_RETRIES`` failed attempts the finalizer is released anyway, so a namespace being deleted can
    never hang on us; the targets keep their record annotations and the periodic sweep reverts them.
    """
    uid = body["metadata"]["uid"]
    meta = body["metadata"]
    if (body.get("spec") or {}).get("workflowRef"):
        # A workflow run holds nothing itself: its children do, and each reverts what it holds as it goes. Deleted
        # here rather than left to the garbage collector, so none outlives its parent for long.
        children = await Children(client, meta["namespace"], meta["name"], uid).delete_all()
        if children:
            logger.info("deleted %d child TestRun(s) of the deleted workflow run", children)
        return
    async with _lock(uid):
        try:
            count = await revert_run(client, settings, body)
        except (RetryLater, ApiError) as exc:
            if retry >= DELETE_RETRIES:
                logger.error("giving up reverting on deletion (the sweep will finish it): %s", exc)
                return
            raise kopf.TemporaryError(str(exc), delay=min(2**retry, 30)) from exc
    _locks.pop(uid, None)
    if count:
        logger.info("reverted %d change(s) of the deleted TestRun", count)
