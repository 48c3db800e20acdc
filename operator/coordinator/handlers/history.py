"""Mirroring finished TestRuns into the history store: what the history handlers in ``registry.py`` call.

At-least-once and idempotent: the run is upserted (keyed by its UID) and only then is ``status.history.synced``
set, so a crash or an outage between the two only means the same run is written again. While the database is
down the timer keeps retrying (``kopf.TemporaryError``); runs are not affected.

A run normally mirrors itself as it finishes (``FinishedRunMirror``, called by the executor): the record goes to
the store first and the run's final status write already says ``synced``, so the timer never fires for it. That
saves a status PATCH, its watch event and a timer invocation per run. If the store does not answer quickly the
run finishes unsynced and the timer takes over as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from coordinator.adapters.kube import ApiError, KubeClient, resource_path
from coordinator.api.models import TERMINAL_PHASES
from coordinator.domain.conditions import now_iso
from coordinator.history.records import run_record
from coordinator.history.redis import ReportCache
from coordinator.history.store import HistoryStore, HistoryUnavailable

log = logging.getLogger(__name__)

MIRROR_RETRY_DELAY = 5.0  # seconds between attempts while the history database is unreachable
BAD_RECORD_RETRY_DELAY = 60.0  # seconds; a status the mirror cannot read needs a fix, not a fast retry
DELETE_MIRROR_RETRIES = 3  # attempts on deletion before the TestRun is let go unmirrored
INLINE_MIRROR_TIMEOUT = 2.0  # seconds a finishing run waits for the store before it leaves the mirror to the timer


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


async def handle_mirror_testrun(
    store: HistoryStore, client: KubeClient, cache: ReportCache, body: Mapping[str, Any], logger: logging.Logger
) -> None:
    """Write a finished TestRun into the history store, then mark it synced in its status."""
    meta = body["metadata"]
    ref = f"TestRun {meta['namespace']}/{meta['name']}"
    try:
        record = run_record(_plain(body))
    except (ValueError, TypeError, KeyError) as exc:
        raise kopf.TemporaryError(f"{ref} cannot be mirrored: {exc}", delay=BAD_RECORD_RETRY_DELAY) from exc
    try:
        await store.mirror(record)
    except HistoryUnavailable as exc:
        raise kopf.TemporaryError(f"{ref} not in the history yet: {exc}", delay=MIRROR_RETRY_DELAY) from exc
    await cache.bump()
    synced = synced_mark(store)
    try:
        await client.patch(
            resource_path("TestRun", meta["namespace"], meta["name"], "status"), {"status": {"history": synced}}
        )
    except ApiError as exc:
        if exc.not_found:
            return  # deleted meanwhile: it is in the history, nothing left to mark
        raise kopf.TemporaryError(f"{ref} is in the history but its status could not say so: {exc}", delay=2) from exc
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


async def handle_mirror_deleted_testrun(
    store: HistoryStore, cache: ReportCache, body: Mapping[str, Any], retry: int, logger: logging.Logger
) -> None:
    """Mirror a finished TestRun deleted before the timer wrote it; give up after a few tries so deletion (and
    so namespace deletion) never waits on the history database."""
    meta = body["metadata"]
    try:
        await store.upsert_run(_plain(body))
    except HistoryUnavailable as exc:
        if retry + 1 >= DELETE_MIRROR_RETRIES:
            logger.error(
                "TestRun %s/%s was deleted before it reached the history, which is unavailable: %s",
                meta["namespace"],
                meta["name"],
                exc,
            )
            return
        raise kopf.TemporaryError(f"history unavailable: {exc}", delay=2) from exc
    await cache.bump()
