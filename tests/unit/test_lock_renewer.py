"""The target-lock renewer ends when its lock is released, even if a cancellation gets swallowed on the way."""

from __future__ import annotations

import asyncio
import time

from coordinator.history.redis import LocalTargetLocks, _Renewer


async def test_stop_ends_a_renewer_whose_renew_swallows_the_cancellation() -> None:
    renewals = 0

    async def renew() -> None:
        # What asyncio.timeout inside a client library can do: a cancellation comes out as TimeoutError.
        nonlocal renewals
        renewals += 1
        try:
            await asyncio.sleep(0.2)
        except asyncio.CancelledError:
            raise TimeoutError from None

    renewer = _Renewer(renew, ttl=0.15)  # renews every 0.05 s
    await asyncio.sleep(0.08)  # inside renew() now
    started = time.monotonic()
    await renewer.stop()
    assert time.monotonic() - started < 1.0
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
