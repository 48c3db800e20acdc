"""Target locks (engine/locks.py): which ones the operator uses, and their rules over a lock store that refuses,
forgets or cannot be asked. The Redis commands themselves run against a real Redis in
tests/e2e/test_history_store.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import pytest

from coordinator.engine import locks as engine_locks
from coordinator.engine.locks import (
    LocalTargetLocks,
    LockRefused,
    LockStoreUnavailable,
    RedisTargetLocks,
    target_locks,
)
from coordinator.history.redis import LockStoreDown, in_process_services, redis_services
from support.clock import use_loop_clock


class MemoryLockStore:
    """The lock store's contract in a dict (pure): values per key, ``down`` when it cannot be asked."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.down = False
        self.renewals = 0

    def _check(self) -> None:
        if self.down:
            raise LockStoreDown("Connection refused")

    async def acquire(self, keys: Sequence[str], value: str, ttl: float) -> tuple[str, str] | None:
        self._check()
        for key in keys:
            if self.values.get(key, value) != value:
                return key, self.values[key]
        self.values.update(dict.fromkeys(keys, value))
        return None

    async def renew(self, keys: Sequence[str], value: str, ttl: float) -> bool:
        self._check()
        self.renewals += 1
        return all(self.values.get(key) == value for key in keys)

    async def release(self, keys: Sequence[str], value: str) -> None:
        self._check()
        for key in keys:
            if self.values.get(key) == value:
                del self.values[key]


async def test_the_operator_uses_redis_locks_only_with_redis() -> None:
    assert isinstance(target_locks(in_process_services()), LocalTargetLocks)
    services = redis_services("redis://:secret@127.0.0.1:1/0", "shop", announce=False)  # connects on first use
    locks = target_locks(services)
    assert isinstance(locks, RedisTargetLocks)
    assert locks.store is services.lock_store
    assert services.description == "redis://:***@127.0.0.1:1/0"
    await services.close()


async def test_a_held_target_is_refused_with_its_holder() -> None:
    store = MemoryLockStore()
    locks = RedisTargetLocks(store)
    async with locks.hold(["Pod/shop/a"], ttl=30, owner="shop/run-1"):
        with pytest.raises(LockRefused) as refused:
            async with locks.hold(["Pod/shop/b", "Pod/shop/a"], ttl=30, owner="shop/run-2"):
                pytest.fail("two holders of one target")
        assert (refused.value.key, refused.value.holder) == ("Pod/shop/a", "shop/run-1")
        assert "Pod/shop/b" not in store.values, "all or none"
    assert store.values == {}, "released"


async def test_an_unreachable_store_fails_closed_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryLockStore()
    store.down = True
    locks = RedisTargetLocks(store)
    with caplog.at_level(logging.INFO, logger="coordinator.engine.locks"):
        for owner in ("a", "b"):
            with pytest.raises(LockStoreUnavailable, match=r"unreachable \(Redis: Connection refused\)"):
                async with locks.hold(["Pod/shop/x"], ttl=30, owner=owner):
                    pytest.fail("a target taken while the lock store cannot be asked")
        assert caplog.text.count("runs wait for their target locks") == 1
        store.down = False
        async with locks.hold(["Pod/shop/x"], ttl=30, owner="c"):
            pass
    assert "target locks are taken again" in caplog.text


@pytest.mark.looptime  # the renewer's period and the TTL pass in the loop's fake time
async def test_a_lock_the_store_forgot_is_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    use_loop_clock(monkeypatch, engine_locks)
    store = MemoryLockStore()
    locks = RedisTargetLocks(store)
    async with locks.hold(["Pod/shop/x"], ttl=0.15, owner="a") as lease:
        store.values.clear()  # a Redis restarted without persistence
        for _ in range(100):
            if lease.lapsed:
                break
            await asyncio.sleep(0.01)
        assert lease.lapsed
        assert "no longer holds it" in lease.why_lapsed()
