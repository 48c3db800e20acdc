"""The run daemon's wait for kopf's finalizer: injection never starts before the finalizer is on the object."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import kopf
import pytest

from coordinator.api.models import FINALIZER
from coordinator.handlers import testrun


class Stop:
    """kopf's DaemonStopped as the handler uses it: truthy once a stop is requested."""

    def __init__(self) -> None:
        self.requested = False

    def __bool__(self) -> bool:
        return self.requested


def body(*finalizers: str) -> dict[str, Any]:
    return {"metadata": {"name": "run", "namespace": "ns", "finalizers": list(finalizers)}}


async def test_returns_at_once_when_the_finalizer_is_there() -> None:
    started = time.monotonic()
    await testrun.wait_for_finalizer(body(FINALIZER), Stop())  # type: ignore[arg-type]
    assert time.monotonic() - started < 0.05


async def test_waits_for_the_finalizer_to_show_in_the_live_body() -> None:
    live = body()

    async def kopf_patches_it_in() -> None:
        await asyncio.sleep(0.1)
        live["metadata"]["finalizers"].append(FINALIZER)

    patcher = asyncio.create_task(kopf_patches_it_in())
    started = time.monotonic()
    await testrun.wait_for_finalizer(live, Stop())  # type: ignore[arg-type]
    waited = time.monotonic() - started
    await patcher
    assert 0.09 <= waited < 1.0, "returned once the finalizer appeared, not before and not a retry later"


async def test_backs_off_to_a_kopf_retry_when_it_never_comes() -> None:
    with pytest.raises(kopf.TemporaryError, match="waiting for the finalizer"):
        await testrun.wait_for_finalizer(body("someone-else/finalizer"), Stop(), within=0.05)  # type: ignore[arg-type]


async def test_a_stop_request_ends_the_wait() -> None:
    stop = Stop()
    stop.requested = True
    started = time.monotonic()
    with pytest.raises(kopf.TemporaryError):
        await testrun.wait_for_finalizer(body(), stop)  # type: ignore[arg-type]
    assert time.monotonic() - started < 0.5
