"""Mirroring finished TestRuns into the history store: what the history handlers in ``handlers/`` call.

At-least-once and idempotent: the run is upserted (keyed by its UID) and only then is ``status.history.synced``
set, so a crash or an outage between the two only means the same run is written again. While the database is
down, writers wait on the store's ``availability`` (history/availability.py): one prober asks again with backoff,
the log says once that the outage began and once that it ended, and runs are not affected.

No run is lost: a finished run deleted before it reached the history keeps its finalizer until it is written,
for at most ``COORDINATOR_HISTORY_DELETE_WAIT`` seconds from its deletion (then it goes, logged as an ERROR).
The annotation ``chaos.coordinator.dev/skip-history: "true"`` lets a person release it at once. The sweeper
holds deleted runs to the same rule (``DeletedRunGate``): kopf stops watching a namespace being deleted when it
serves namespaces by pattern, and the sweeper then writes the run itself.

A run normally mirrors itself as it finishes (``FinishedRunMirror``, called by the executor): the record goes to
the store first and the run's final status write already says ``synced``, so the timer never fires for it. That
saves a status PATCH, its watch event and a timer invocation per run. If the store does not answer quickly the
run finishes unsynced and the timer takes over as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

from coordinator.adapters.kube import ApiError, KubeClient, resource_path
from coordinator.api.models import TERMINAL_PHASES
from coordinator.domain.timestamps import now_iso, parse_iso
from coordinator.history.cache import ReportCache
from coordinator.history.records import run_record
from coordinator.history.store import HistoryStore, HistoryUnavailable

log = logging.getLogger(__name__)

BAD_RECORD_RETRY_DELAY = 60.0  # seconds; a status the mirror cannot read needs a fix, not a fast retry
INLINE_MIRROR_TIMEOUT = 2.0  # seconds a finishing run waits for the store before it leaves the mirror to the timer
SKIP_HISTORY_ANNOTATION = "chaos.coordinator.dev/skip-history"  # "true": let a deleted run go unrecorded now
RELEASE_CHECK_INTERVAL = 5.0  # seconds between looks for SKIP_HISTORY_ANNOTATION while a deleted run waits
STOP_CHECK_INTERVAL = 1.0  # seconds between looks at the timer's stop flag while the history timer waits


class MirrorDeferred(Exception):
    """The run is not mirrored yet and should be tried again in ``delay`` seconds (kopf's timer retries it)."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


class StopFlag(Protocol):
    """True once the caller (kopf's timer) is being stopped."""

    def __bool__(self) -> bool: ...


def needs_mirroring(status: Mapping[str, Any]) -> bool:
    """A finished run whose status does not yet say it is in the history."""
    history = status.get("history")
    synced = isinstance(history, Mapping) and history.get("synced") is True
    return status.get("phase") in TERMINAL_PHASES and not synced


def synced_mark(store: HistoryStore) -> dict[str, Any]:
    """``status.history`` once the run is in ``store``."""
    return {"synced": True, "syncedAt": now_iso(), "store": store.backend}


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """kopf's body views as plain dicts (the store keeps the status as JSON)."""
    return {key: dict(body.get(key) or {}) for key in ("metadata", "spec", "status")}


async def mirror_testrun(
    store: HistoryStore,
    client: KubeClient,
    cache: ReportCache,
    body: Mapping[str, Any],
    logger: logging.Logger,
    stopped: StopFlag | None = None,
) -> None:
    """Write a finished TestRun into the history store, then mark it synced in its status; ``MirrorDeferred``
    when either cannot be done now.

    While the database is unavailable it waits, quietly, and ends when kopf stops the timer (the TestRun's
    deletion: kopf runs the deletion handlers only once its timers have ended)."""
    meta = body["metadata"]
    ref = f"TestRun {meta['namespace']}/{meta['name']}"
    try:
        record = run_record(_plain(body))
    except (ValueError, TypeError, KeyError) as exc:
        raise MirrorDeferred(f"{ref} cannot be mirrored: {exc}", delay=BAD_RECORD_RETRY_DELAY) from exc
    while True:
        try:
            await store.mirror(record)
            break
        except HistoryUnavailable:
            # The store has reported the outage (one log line for every run); wait quietly for its end.
            while not await store.availability.wait(STOP_CHECK_INTERVAL):
                if stopped:
                    return
    await cache.bump()
    synced = synced_mark(store)
    try:
        await client.patch(
            resource_path("TestRun", meta["namespace"], meta["name"], "status"), {"status": {"history": synced}}
        )
    except ApiError as exc:
        if exc.not_found:
            return  # deleted meanwhile: it is in the history, nothing left to mark
        raise MirrorDeferred(f"{ref} is in the history but its status could not say so: {exc}", delay=2) from exc
    logger.info("%s mirrored to the history (%s)", ref, store.backend)


class FinishedRunMirror:
    """Mirror a run while it finishes: called with the TestRun as its final status write will leave it; returns
    the ``status.history`` to put in that write, or None when the timer has to do it (store away or slow, or a
    status it cannot read: the timer then reports why)."""

    def __init__(self, store: HistoryStore, cache: ReportCache, timeout: float = INLINE_MIRROR_TIMEOUT) -> None:
        self.store = store
        self.cache = cache
        self.timeout = timeout

    async def __call__(self, testrun: Mapping[str, Any]) -> dict[str, Any] | None:
        if not self.store.availability.up:
            return None  # known to be away: the timer waits for it, the finishing run need not
        try:
            record = run_record(testrun)
        except (ValueError, TypeError, KeyError):
            return None
        try:
            await asyncio.wait_for(self.store.mirror(record), self.timeout)
        except (HistoryUnavailable, TimeoutError):
            return None
        except Exception as exc:  # a record the store refuses: never the finishing run's problem
            log.warning("TestRun %s/%s left to the history timer: %s", record.namespace, record.name, exc)
            return None
        await self.cache.bump()
        return synced_mark(self.store)


def skip_requested(meta: Mapping[str, Any]) -> bool:
    """Whether a person asked to let the deleted run go without its history record."""
    return str((meta.get("annotations") or {}).get(SKIP_HISTORY_ANNOTATION, "")).lower() == "true"


def waited_out(meta: Mapping[str, Any], bound: float, now: float | None = None) -> float:
    """Seconds left before a deleted run stops waiting for the history (<= 0: it goes)."""
    deleted = meta.get("deletionTimestamp")
    started = parse_iso(deleted).timestamp() if deleted else time.time()
    return started + bound - (time.time() if now is None else now)


async def mirror_deleted_testrun(
    store: HistoryStore,
    cache: ReportCache,
    client: KubeClient,
    body: Mapping[str, Any],
    bound: float,
    logger: logging.Logger,
) -> None:
    """Write a finished TestRun deleted before it reached the history; its finalizer stays until then.

    It waits (quietly) while the database is unavailable, at most ``bound`` seconds from the deletion, and lets
    the run go at once when it carries ``SKIP_HISTORY_ANNOTATION``.
    """
    meta = body["metadata"]
    ref = f"TestRun {meta['namespace']}/{meta['name']}"
    while True:
        if skip_requested(meta):
            logger.warning("%s let go without reaching the history: %s is set", ref, SKIP_HISTORY_ANNOTATION)
            return
        try:
            await store.upsert_run(_plain(body))
            break
        except HistoryUnavailable as exc:
            cause = str(exc)
        except (ValueError, TypeError, KeyError) as exc:
            logger.error("%s let go without reaching the history: its status cannot be recorded: %s", ref, exc)
            return
        left = waited_out(meta, bound)
        if left <= 0:
            logger.error(
                "%s let go without reaching the history: the database stayed unavailable for %.0fs after the "
                "deletion (COORDINATOR_HISTORY_DELETE_WAIT): %s",
                ref,
                bound,
                cause,
            )
            return
        if await store.availability.wait(min(left, RELEASE_CHECK_INTERVAL)) or waited_out(meta, bound) <= 0:
            continue  # back (write it), or out of time (say so, once)
        try:  # still down: has a person released it meanwhile?
            fresh = await client.get_or_none(resource_path("TestRun", meta["namespace"], meta["name"]))
        except ApiError:
            continue
        if fresh is None or fresh["metadata"].get("uid") != meta.get("uid"):
            return
        meta = fresh["metadata"]
    await cache.bump()
    logger.info("%s mirrored to the history on its deletion (%s)", ref, store.backend)


class DeletedRunGate:
    """Whether the sweeper may take our finalizer off a deleted TestRun (engine/sweeper.py): the same rule as
    the deletion handler, for runs kopf no longer watches. A finished run not yet in the history is written
    first, if the database takes it; otherwise it stays, until the bound or the annotation lets it go."""

    def __init__(self, store: HistoryStore, cache: ReportCache, bound: float) -> None:
        self.store = store
        self.cache = cache
        self.bound = bound

    async def __call__(self, testrun: Mapping[str, Any]) -> bool:
        if not needs_mirroring(testrun.get("status") or {}):
            return True
        meta = testrun["metadata"]
        ref = f"TestRun {meta['namespace']}/{meta['name']}"
        if skip_requested(meta):
            log.warning("%s let go without reaching the history: %s is set", ref, SKIP_HISTORY_ANNOTATION)
            return True
        if self.store.availability.up:
            try:
                await self.store.upsert_run(_plain(testrun))
            except HistoryUnavailable:
                pass
            except (ValueError, TypeError, KeyError) as exc:
                log.error("%s let go without reaching the history: its status cannot be recorded: %s", ref, exc)
                return True
            else:
                await self.cache.bump()
                log.info("%s mirrored to the history on its deletion (%s)", ref, self.store.backend)
                return True
        if waited_out(meta, self.bound) <= 0:
            log.error(
                "%s let go without reaching the history: the database stayed unavailable for %.0fs after the "
                "deletion (COORDINATOR_HISTORY_DELETE_WAIT): %s",
                ref,
                self.bound,
                self.store.availability.cause,
            )
            return True
        return False
