"""The target-lock renewer ends when its lock is released, even if a cancellation gets swallowed on the way."""

from __future__ import annotations

import asyncio

import pytest

from coordinator.engine import locks
from coordinator.engine.locks import LocalTargetLocks, LockLease, _Renewer
from support.clock import use_loop_clock

# The renewer's periods, its TTLs (time.monotonic in engine/locks.py) and the tests' waits all pass in the event
# loop's fake time (looptime): exact, and no test waits for real.
pytestmark = pytest.mark.looptime


@pytest.fixture(autouse=True)
async def loop_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    use_loop_clock(monkeypatch, locks)


def now() -> float:
    return asyncio.get_running_loop().time()


async def test_stop_ends_a_renewer_whose_renew_swallows_the_cancellation() -> None:
    renewals = 0

    async def renew() -> bool:
        # What asyncio.timeout inside a client library can do: a cancellation comes out as TimeoutError.
        nonlocal renewals
        renewals += 1
        try:
            await asyncio.sleep(0.2)
        except asyncio.CancelledError:
            raise TimeoutError from None
        return True

    renewer = _Renewer(LockLease(("Pod/shop/a",), "run-a"), renew, ttl=0.15)  # renews every 0.05 s
    await asyncio.sleep(0.08)  # inside renew() now
    started = now()
    await renewer.stop()
    assert now() - started < 1.0
    count = renewals
    await asyncio.sleep(0.2)
    assert renewals == count, "no renewal after stop"


async def test_local_locks_release_on_exit_and_keep_renewing_while_held() -> None:
    locks = LocalTargetLocks()
    async with locks.hold(["Pod/shop/web-1"], ttl=0.15, owner="run-a"):
        await asyncio.sleep(0.4)  # longer than the ttl: the renewer keeps it
        assert locks._holder("Pod/shop/web-1") is not None
    assert locks._holder("Pod/shop/web-1") is None
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "target lock renewer"]


async def test_a_lease_the_store_no_longer_holds_is_lost_at_the_next_renewal() -> None:
    lease = LockLease(("Deployment/shop/web",), "run-a", valid_until=now() + 30)

    async def renew() -> bool:
        return False  # the store came back empty, or someone else holds the key now

    renewer = _Renewer(lease, renew, ttl=0.15)
    await asyncio.sleep(0.2)
    await renewer.stop()
    assert lease.lapsed
    assert "no longer holds it" in lease.why_lapsed()


async def test_a_lease_that_cannot_be_renewed_lapses_at_its_ttl_and_not_before() -> None:
    lease = LockLease(("Deployment/shop/web",), "run-a", valid_until=now() + 0.3)

    async def renew() -> bool:
        raise ConnectionError("Redis is down")

    renewer = _Renewer(lease, renew, ttl=0.3)
    await asyncio.sleep(0.15)
    assert not lease.lapsed, "still within its TTL: the store cannot have given the keys to anyone yet"
    await asyncio.sleep(0.25)
    assert lease.lapsed
    assert "could not be renewed" in lease.why_lapsed()
    await renewer.stop()


async def test_each_confirmed_renewal_moves_the_lease_on() -> None:
    lease = LockLease(("Deployment/shop/web",), "run-a", valid_until=now() + 0.3)

    async def renew() -> bool:
        return True

    renewer = _Renewer(lease, renew, ttl=0.3)
    await asyncio.sleep(0.6)
    assert not lease.lapsed
    await renewer.stop()
