"""What the kopf handlers call: translate between kopf's world (flags, retries) and the engine's."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from coordinator.adapters.kube import ApiError, KubeClient, resource_path
from coordinator.api.models import FINALIZER
from coordinator.engine.executor import Executor, RetryLater, RunHandle, RunInterrupted, revert_run
from coordinator.history.redis import TargetLocks
from coordinator.settings import Settings

DELETE_RETRIES = 8

# One lock per TestRun: the deletion handler never reverts while the run's daemon is still applying.
_locks: dict[str, asyncio.Lock] = {}


def _lock(uid: str) -> asyncio.Lock:
    return _locks.setdefault(uid, asyncio.Lock())


async def handle_execute_testrun(
    client: KubeClient,
    settings: Settings,
    body: Mapping[str, Any],
    stopped: kopf.DaemonStopped,
    locks: TargetLocks | None = None,
) -> None:
    """Run (or resume) a TestRun until it ends, the operator stops, or the TestRun is deleted."""
    if FINALIZER not in (body["metadata"].get("finalizers") or []):
        # kopf adds the finalizer in its own patch; nothing is injected before it is visible on the object.
        raise kopf.TemporaryError("waiting for the finalizer before injecting anything", delay=0.5)
    uid = body["metadata"]["uid"]
    async with _lock(uid):
        try:
            # kopf's body can lag behind our own status writes; a resumed run must start from what is stored.
            stored = await client.get_or_none(
                resource_path("TestRun", body["metadata"]["namespace"], body["metadata"]["name"])
            )
        except ApiError as exc:
            raise kopf.TemporaryError(f"Kubernetes API: {exc}", delay=2) from exc
        if stored is None or stored["metadata"]["uid"] != uid:
            return
        handle = RunHandle(body=body, stopped=lambda: bool(stopped))
        executor = Executor(client, settings, handle, stored=stored, locks=locks)
        try:
            await executor.execute()
        except RunInterrupted:
            return
        except RetryLater as exc:
            raise kopf.TemporaryError(str(exc), delay=2) from exc
        except ApiError as exc:
            raise kopf.TemporaryError(f"Kubernetes API: {exc}", delay=2) from exc
    _locks.pop(uid, None)


async def handle_delete_testrun(
    client: KubeClient, settings: Settings, body: Mapping[str, Any], retry: int, logger: logging.Logger
) -> None:
    """Revert whatever the deleted TestRun still holds before its finalizer goes.

    After ``DELETE_RETRIES`` failed attempts the finalizer is released anyway, so a namespace being deleted can
    never hang on us; the targets keep their record annotations and the periodic sweep reverts them.
    """
    uid = body["metadata"]["uid"]
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
