"""The run daemon's wait for kopf's finalizer: injection never starts before the finalizer is on the object."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from coordinator.api.models import FINALIZER
from coordinator.handlers import testrun
from support.clock import use_loop_clock

# The handler's polls and deadlines (time.monotonic in handlers/testrun.py) and the tests' waits all pass in the
# event loop's fake time (looptime): the timings asserted below are exact, and no test waits for real.
pytestmark = pytest.mark.looptime


@pytest.fixture(autouse=True)
async def loop_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    use_loop_clock(monkeypatch, testrun)


def now() -> float:
    return asyncio.get_running_loop().time()


class Stop:
    """kopf's DaemonStopped as the handler uses it: truthy once a stop is requested."""

    def __init__(self) -> None:
        self.requested = False

    def __bool__(self) -> bool:
        return self.requested


class WaitableStop(Stop):
    """With kopf's ``wait``: True once a stop is requested within the timeout."""

    async def wait(self, timeout: float) -> bool:  # noqa: ASYNC109 - kopf's DaemonStopped.wait
        await asyncio.sleep(timeout)
        return self.requested


def body(*finalizers: str) -> dict[str, Any]:
    return {"metadata": {"name": "run", "namespace": "ns", "finalizers": list(finalizers)}}


async def test_returns_at_once_when_the_finalizer_is_there() -> None:
    started = now()
    assert await testrun.wait_for_finalizer(body(FINALIZER), WaitableStop()) is True  # type: ignore[arg-type]
    assert now() - started < 0.05


async def test_waits_for_the_finalizer_to_show_in_the_live_body() -> None:
    live = body()

    async def kopf_patches_it_in() -> None:
        await asyncio.sleep(0.1)
        live["metadata"]["finalizers"].append(FINALIZER)

    patcher = asyncio.create_task(kopf_patches_it_in())
    started = now()
    assert await testrun.wait_for_finalizer(live, WaitableStop()) is True  # type: ignore[arg-type]
    waited = now() - started
    await patcher
    assert 0.09 <= waited < 1.0, "returned once the finalizer appeared, not before and not a retry later"


async def test_a_late_finalizer_is_waited_for_quietly(caplog: pytest.LogCaptureFixture) -> None:
    """Past the fast wait the daemon goes on waiting (no kopf retry, which kopf logs at ERROR), and says so once."""
    live = body("someone-else/finalizer")

    async def kopf_patches_it_in() -> None:
        await asyncio.sleep(0.3)
        live["metadata"]["finalizers"].append(FINALIZER)

    patcher = asyncio.create_task(kopf_patches_it_in())
    with caplog.at_level(logging.INFO, logger=testrun.__name__):
        assert await testrun.wait_for_finalizer(live, WaitableStop(), within=0.05) is True  # type: ignore[arg-type]
    await patcher
    waits = [r for r in caplog.records if "waiting for the finalizer" in r.getMessage()]
    assert [r.levelno for r in waits] == [logging.INFO]


async def test_waiting_daemons_share_one_polling_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """A burst of new runs is many daemons waiting at once: they are woken by one loop over their bodies, not
    each by its own 10 ms timer (10,000 wake-ups a second for 100 runs, on the loop that must process them)."""
    sleeps = 0
    real_sleep = asyncio.sleep

    async def counted_sleep(delay: float, *args: Any) -> Any:
        nonlocal sleeps
        sleeps += 1
        return await real_sleep(delay, *args)

    monkeypatch.setattr(asyncio, "sleep", counted_sleep)
    lives = [body() for _ in range(50)]
    waits = [asyncio.create_task(testrun.wait_for_finalizer(live, WaitableStop())) for live in lives]  # type: ignore[arg-type]
    await real_sleep(0.2)
    for live in lives:
        live["metadata"]["finalizers"].append(FINALIZER)
    started = now()
    assert await asyncio.gather(*waits) == [True] * 50
    assert now() - started < 0.1, "every daemon woken within a poll interval or so"
    # One loop at 10 ms for about 0.2 s: some 20 sleeps. Fifty pollers of their own would have made 1,000.
    assert sleeps < 100


async def test_a_stop_request_wakes_a_waiting_daemon() -> None:
    stop = WaitableStop()
    wait = asyncio.create_task(testrun.wait_for_finalizer(body(), stop))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    stop.requested = True
    started = now()
    assert await wait is False
    assert now() - started < 0.5


async def test_a_stop_request_ends_the_wait() -> None:
    stop = WaitableStop()
    stop.requested = True
    started = now()
    assert await testrun.wait_for_finalizer(body(), stop) is False  # type: ignore[arg-type]
    assert now() - started < 0.5


@pytest.mark.parametrize(
    "change",
    [
        lambda live: live["spec"].update(abort=True),
        lambda live: live["metadata"].update(annotations={"chaos.coordinator.dev/abort": "true"}),
        lambda live: live.update(status={"deadline": "2000-01-01T00:00:00.000000Z"}),
    ],
    ids=["spec-abort", "abort-annotation", "deadline-passed"],
)
async def test_a_retry_backoff_is_cut_short_by_abort_or_the_deadline(change: Any) -> None:
    """Between two attempts of a failing run the daemon waits up to 30 s; an abort (or the deadline) must not
    wait that long: the next attempt, which checks both first, comes within a poll interval."""
    live: dict[str, Any] = {**body(FINALIZER), "spec": {}}

    async def abort_soon() -> None:
        await asyncio.sleep(0.1)
        change(live)

    changer = asyncio.create_task(abort_soon())
    started = now()
    stopped = await testrun._pause(live, WaitableStop(), delay=30, poll=0.05)  # type: ignore[arg-type]
    await changer
    assert stopped is False
    assert now() - started < 0.5


async def test_a_retry_backoff_ends_when_the_daemon_stops() -> None:
    stop = WaitableStop()
    stop.requested = True
    assert await testrun._pause({**body(), "spec": {}}, stop, delay=30, poll=0.05) is True  # type: ignore[arg-type]
