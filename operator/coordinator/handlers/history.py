"""The history timer's handler: mirroring (``history/mirror.py``) in kopf's terms."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from coordinator.adapters.kube import KubeClient
from coordinator.history.cache import ReportCache
from coordinator.history.mirror import MirrorDeferred, mirror_testrun
from coordinator.history.store import HistoryStore


async def handle_mirror_testrun(
    store: HistoryStore,
    client: KubeClient,
    cache: ReportCache,
    body: Mapping[str, Any],
    logger: logging.Logger,
    stopped: kopf.DaemonStopped | None = None,
) -> None:
    """Mirror a finished TestRun, then mark it synced; what cannot be done now kopf retries after a delay."""
    try:
        await mirror_testrun(store, client, cache, body, logger, stopped)
    except MirrorDeferred as exc:
        raise kopf.TemporaryError(str(exc), delay=exc.delay) from exc
