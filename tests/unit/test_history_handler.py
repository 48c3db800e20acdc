"""The history timer's handler (handlers/history.py) says in kopf's terms what the mirror (history/mirror.py)
could not do now: a retry after the mirror's own delay."""

from __future__ import annotations

import logging
from typing import cast

import kopf
import pytest

from coordinator.adapters.kube import KubeClient
from coordinator.handlers.history import handle_mirror_testrun
from coordinator.history.cache import ReportCache
from coordinator.history.mirror import BAD_RECORD_RETRY_DELAY
from coordinator.history.store import HistoryStore

NOTHING = cast(HistoryStore, None)  # never reached: the record is refused first


async def test_a_run_the_mirror_cannot_read_is_retried_after_the_mirrors_delay() -> None:
    body = {"metadata": {"namespace": "shop", "name": "run-1", "uid": "u"}, "status": {"phase": None}}
    with pytest.raises(kopf.TemporaryError) as retried:
        await handle_mirror_testrun(
            NOTHING, cast(KubeClient, None), cast(ReportCache, None), body, logging.getLogger("test")
        )
    assert retried.value.delay == BAD_RECORD_RETRY_DELAY
    assert str(retried.value).startswith("TestRun shop/run-1 cannot be mirrored: ")
